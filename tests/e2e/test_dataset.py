"""End to end: the dataset summary and the model comparison, run as real jobs.

Real ``crosslens serve`` (API + UI processes, embedded Dask cluster), real headless Chromium;
one server for the module, without the demo catalogue: two shipped zoo models (transformer,
early fusion) and a 40-instance digits + question dataset are uploaded through the API.
Screenshots go to ``test-artifacts/test_dataset/``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from estimators.zoo.scenarios import get_scenario
from tests.conftest import LiveServers
from tests.e2e.browser import (
    full_page_screenshot,
    login,
    serve_without_demos,
    wait_until,
)
from tests.e2e.demo_files import dataset_zip

pytestmark = pytest.mark.browser
TIMEOUT = 90  # the first job starts the Dask cluster


@pytest.fixture(scope="module")
def live_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServers]:
    yield from serve_without_demos(tmp_path_factory)


@pytest.fixture(scope="module")
def setup(live_servers: LiveServers, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A project with two models and one dataset, uploaded through the API."""
    api = httpx.Client(base_url=f"{live_servers.api_url}/api/v1", timeout=120,
                       headers={"Authorization": f"Bearer {live_servers.admin_token}"})
    project = api.post("/projects", json={"name": "summary-lab", "description": "e2e"})
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    shipped = {m.name: m for m in get_scenario("digits-question").models}
    models = []
    for name in ("transformer", "early_fusion"):
        spec = shipped[name]
        response = api.post("/models", data={"project_id": str(project_id), "name": name},
                            files={"weights": (spec.weights_path.name,
                                               spec.weights_path.read_bytes()),
                                   "config": (spec.config_path.name,
                                              spec.config_path.read_bytes())})
        assert response.status_code == 201, response.text
        models.append(response.json()["id"])
    archive = dataset_zip(tmp_path_factory.mktemp("uploads") / "digits-questions.zip")
    response = api.post("/datasets", data={"project_id": str(project_id)},
                        files={"file": (archive.name, archive.read_bytes(),
                                        "application/zip")})
    assert response.status_code == 201, response.text
    api.close()
    return {"project": project_id, "models": models, "dataset": response.json()["id"]}


def _wait(condition: Callable[[], object], timeout: float = TIMEOUT, what: str = "") -> object:
    return wait_until(condition, timeout, what, poll_s=0.1)


def _states(dash_br) -> list[str]:
    rows = dash_br.driver.find_elements(By.CSS_SELECTOR, "#ds-progress .job-row")
    return [r.get_attribute("data-state") for r in rows]


def test_dataset_summary_runs_jobs_with_progress_and_draws_pid_and_emap(
        dash_br, live_servers: LiveServers, setup: dict, artifacts_dir: Path) -> None:
    login(dash_br, live_servers)
    dash_br.driver.get(f"{live_servers.ui_url}/dataset?project={setup['project']}"
                       f"&model={setup['models'][0]}&dataset={setup['dataset']}")
    dash_br.wait_for_text_to_equal("h1", "Dataset", timeout=30)
    _wait(lambda: "not run yet" in dash_br.find_element("#ds-progress").text,
          what="the empty progress list")

    dash_br.find_element("#ds-run").click()
    _wait(lambda: len(_states(dash_br)) == 7 and all(_states(dash_br)),
          what="seven submitted jobs")
    _wait(lambda: all(s == "succeeded" for s in _states(dash_br)),
          what=f"all jobs to succeed ({_states(dash_br)})")
    assert "100%" in dash_br.find_element("#ds-progress").text
    # polling stops once every job is final
    _wait(lambda: dash_br.driver.execute_script(
        "return document.querySelectorAll('#ds-progress .btn-danger').length") == 0,
        what="cancel buttons to go")

    pid = _wait(lambda: dash_br.driver.find_elements(
        By.CSS_SELECTOR, "#ds-pid-graph-0 .main-svg"), what="the PID figure")
    assert pid
    pid_text = dash_br.find_element("#ds-pid").text
    assert "Synergy" in pid_text and "bits" in pid_text
    _wait(lambda: "EMAP gap" in dash_br.find_element("#ds-emap-graph").text,
          what="the EMAP figure")
    for graph in ("#ds-types-graph", "#ds-importance-graph", "#ds-robustness-graph",
                  "#ds-embedding-graph"):
        _wait(lambda g=graph: dash_br.driver.find_elements(By.CSS_SELECTOR, f"{g} .main-svg"),
              what=graph)
    assert "dominance" in dash_br.find_element("#ds-types").text.lower()
    full_page_screenshot(dash_br, artifacts_dir / "dataset-summary.png")

    # The same request again (a reload): the finished jobs come back at once, no rerun.
    dash_br.driver.refresh()
    _wait(lambda: dash_br.driver.find_elements(By.CSS_SELECTOR, "#ds-emap-graph .main-svg"),
          timeout=30, what="cached results after a reload")
    assert all(s == "succeeded" for s in _states(dash_br))

    # A click on a point of the instance map opens that instance. Plotly's click event is
    # emitted on the graph directly (clicking an SVG point through WebDriver hits whatever
    # marker happens to lie on top); the page's callback turns it into the link.
    _wait(lambda: dash_br.driver.find_elements(
        By.CSS_SELECTOR, "#ds-embedding-graph .scatterlayer .point"), what="instance map points")
    assert "PC 1" in dash_br.find_element("#ds-embedding-graph").text
    index = dash_br.driver.execute_script(
        "const gd = document.querySelector('#ds-embedding-graph .js-plotly-plot');"
        "const index = gd.data[0].customdata[0];"
        "gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: 0,"
        " customdata: index}]}); return index;")
    _wait(lambda: "/instance?" in dash_br.driver.current_url, timeout=30,
          what="the instance page after a click")
    url = dash_br.driver.current_url
    assert f"project={setup['project']}" in url and f"dataset={setup['dataset']}" in url
    assert f"instance={index}" in url
    dash_br.wait_for_text_to_equal("h1", "Instance", timeout=30)


def test_compare_ranks_two_models_against_the_data(
        dash_br, live_servers: LiveServers, setup: dict, artifacts_dir: Path) -> None:
    login(dash_br, live_servers)
    models = "-".join(str(m) for m in setup["models"])
    dash_br.driver.get(f"{live_servers.ui_url}/compare?project={setup['project']}"
                       f"&dataset={setup['dataset']}&models={models}")
    dash_br.wait_for_text_to_equal("h1", "Compare models", timeout=30)
    _wait(lambda: "not run yet" in dash_br.find_element("#cmp-progress").text,
          what="the empty progress row")
    dash_br.find_element("#cmp-run").click()
    _wait(lambda: dash_br.driver.find_elements(By.CSS_SELECTOR, "#cmp-table"),
          what="the ranking table")
    table = dash_br.find_element("#cmp-table").text
    assert "transformer" in table and "early_fusion" in table
    assert "Best match:" in dash_br.find_element("#cmp-result").text
    _wait(lambda: dash_br.driver.find_elements(By.CSS_SELECTOR, "#cmp-graph-0 .main-svg"),
          what="the profile figure")
    assert "models vs data" in dash_br.find_element("#cmp-graph-0").text
    full_page_screenshot(dash_br, artifacts_dir / "compare.png")


def _viewer_token(servers: LiveServers) -> str:
    """A viewer of the project, minted with the real CLI on the server's data dir."""
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "users", "--data-dir", str(servers.data_dir),
         "add", "vera", "--project", "summary-lab", "--role", "viewer"],
        capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_viewers_see_finished_results_but_cannot_run(
        dash_br, live_servers: LiveServers, setup: dict, artifacts_dir: Path) -> None:
    params = {"dataset_id": setup["dataset"], "model_id": setup["models"][0]}
    with httpx.Client(base_url=f"{live_servers.api_url}/api/v1", timeout=60, headers={
            "Authorization": f"Bearer {live_servers.admin_token}"}) as api:
        job = api.post("/jobs", json={"project_id": setup["project"], "kind": "emap",
                                      "params": params}).json()  # the cached one if it ran
        _wait(lambda: api.get(f"/jobs/{job['id']}").json()["state"] == "succeeded",
              what="the EMAP job")
    dash_br.driver.get(f"{live_servers.ui_url}/?token={_viewer_token(live_servers)}")
    dash_br.server_url = live_servers.ui_url
    dash_br.driver.get(f"{live_servers.ui_url}/dataset?project={setup['project']}"
                       f"&model={setup['models'][0]}&dataset={setup['dataset']}")
    dash_br.wait_for_text_to_equal("h1", "Dataset", timeout=30)
    assert not dash_br.find_element("#ds-run").is_enabled()
    assert "editor role" in dash_br.find_element("#ds-role-note").text
    _wait(lambda: dash_br.driver.find_elements(By.CSS_SELECTOR, "#ds-emap-graph .main-svg"),
          what="the EMAP result for the viewer")
    assert not dash_br.driver.find_elements(By.CSS_SELECTOR, "#ds-progress .btn-danger")
    full_page_screenshot(dash_br, artifacts_dir / "dataset-viewer.png")
