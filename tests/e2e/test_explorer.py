"""End to end: upload a model and a dataset, explore an instance, share the link.

Real ``crosslens serve`` (API + UI processes), real headless Chromium; one server for the
module. Screenshots of every page go to ``test-artifacts/test_explorer/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import LiveServers
from tests.e2e.browser import (
    full_page_screenshot,
    login,
    serve_without_demos,
    wait_until,
)
from tests.e2e.demo_files import dataset_zip, model_files

pytestmark = pytest.mark.browser
TIMEOUT = 60  # first explanations on a cold API load the model and warm torch


@pytest.fixture(scope="module")
def live_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServers]:
    """One server for the module, without the demo catalogue: this module uploads the demo
    model itself, through the page, and skipping the catalogue saves half a minute."""
    yield from serve_without_demos(tmp_path_factory)


@pytest.fixture(scope="module")
def project(live_servers: LiveServers) -> int:
    headers = {"Authorization": f"Bearer {live_servers.admin_token}"}
    response = httpx.post(f"{live_servers.api_url}/api/v1/projects", headers=headers,
                          json={"name": "e2e-lab", "description": "browser tests"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def upload_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    config, weights = model_files(folder)
    broken = folder / "broken-config.json"
    broken.write_text("{not json")
    return {"config": config, "weights": weights, "broken_config": broken,
            "dataset": dataset_zip(folder / "digits-questions.zip")}


def _wait(condition: Callable[[], object], timeout: float = TIMEOUT, what: str = "") -> object:
    return wait_until(condition, timeout, what, poll_s=0.03)


def _idle(dash_br) -> None:
    """Every pending callback has answered (Dash marks loading components)."""
    _wait(lambda: not dash_br.driver.find_elements(
        By.CSS_SELECTOR, "[data-dash-is-loading='true']"), what="callbacks to finish")


def _is_stale(element: WebElement) -> bool:
    """True once Dash has replaced ``element`` with a newly rendered one."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def _query(dash_br) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(dash_br.driver.current_url).query).items()}


def _choose_file(dash_br, upload_id: str, path: Path) -> None:
    dash_br.find_element(f"#{upload_id} input[type=file]").send_keys(str(path))
    _wait(lambda: path.name in dash_br.find_element(f"#{upload_id}-info").text,
          what=f"{path.name} to be read")


def test_models_page_uploads_shows_field_errors_and_lists(
        dash_br, live_servers: LiveServers, project: int, upload_files: dict[str, Path],
        artifacts_dir: Path) -> None:
    login(dash_br, live_servers)
    dash_br.driver.get(f"{live_servers.ui_url}/models?project={project}")
    dash_br.wait_for_text_to_equal("h1", "Models & data", timeout=30)

    # A config that is not JSON: the API's complaint lands next to the config field.
    dash_br.find_element("#models-name").send_keys("digits-transformer")
    _choose_file(dash_br, "models-main", upload_files["weights"])
    _choose_file(dash_br, "models-meta", upload_files["broken_config"])
    dash_br.find_element("#models-upload").click()
    _wait(lambda: dash_br.find_element("#models-meta-error").text
          or dash_br.find_element("#models-upload-status").text, what="upload error")
    assert dash_br.find_element("#models-meta-error").text, "error not next to the config"
    config_error = dash_br.find_element("#models-meta-error").text
    assert "not valid JSON" in config_error and "(HTTP 422)" in config_error
    full_page_screenshot(dash_br, artifacts_dir / "models_field_error.png")

    _choose_file(dash_br, "models-meta", upload_files["config"])
    dash_br.find_element("#models-upload").click()
    dash_br.wait_for_contains_text("#models-upload-status", "Uploaded model", timeout=TIMEOUT)
    assert dash_br.find_element("#models-meta-error").text == ""

    _choose_file(dash_br, "models-dataset", upload_files["dataset"])
    dash_br.find_element("#models-dataset-upload").click()
    dash_br.wait_for_contains_text("#models-dataset-status", "40 instances", timeout=TIMEOUT)
    dash_br.wait_for_contains_text("#models-table", "digits-transformer", timeout=10)
    dash_br.wait_for_contains_text("#models-table", "image (image [1, 8, 8])", timeout=10)
    dash_br.wait_for_contains_text("#datasets-table", "digits-questions", timeout=10)
    _idle(dash_br)
    full_page_screenshot(dash_br, artifacts_dir / "models.png")
    assert dash_br.get_logs() in ([], None)


def _ids(live_servers: LiveServers, project: int) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {live_servers.admin_token}"}
    models = httpx.get(f"{live_servers.api_url}/api/v1/models", headers=headers,
                       params={"project_id": project}).json()
    datasets = httpx.get(f"{live_servers.api_url}/api/v1/datasets", headers=headers,
                         params={"project_id": project}).json()
    model = next(m for m in models if m["name"] == "digits-transformer")
    dataset = next(d for d in datasets if d["name"] == "digits-questions")
    return model["id"], dataset["id"]


def _click_cell(dash_br, graph_id: str, fx: float, fy: float) -> None:
    """Click a plotly heatmap at fractions (fx, fy) of its plotting area."""
    area: WebElement = dash_br.find_element(f"#{graph_id} .nsewdrag")
    size = area.size
    dash_br.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", area)
    # selenium 4.2 measures the offset from the element's top-left corner
    ActionChains(dash_br.driver).move_to_element_with_offset(
        area, int(size["width"] * fx), int(size["height"] * fy)).click().perform()


def test_instance_explorer_flow_and_shared_link_reproduce_the_view(
        dash_br, live_servers: LiveServers, project: int, artifacts_dir: Path) -> None:
    model_id, dataset_id = _ids(live_servers, project)
    login(dash_br, live_servers)
    start = f"/instance?project={project}&model={model_id}&dataset={dataset_id}&instance=0"
    dash_br.driver.get(live_servers.ui_url + start)
    dash_br.wait_for_contains_text("#inst-summary", "#0", timeout=TIMEOUT)
    dash_br.wait_for_element("#inst-prob-graph", timeout=TIMEOUT)
    dash_br.wait_for_element("#inst-attr .modality-graph", timeout=TIMEOUT)
    _idle(dash_br)
    full_page_screenshot(dash_br, artifacts_dir / "instance_attributions.png")

    # Typical instance view: next instance -> prediction and attributions redrawn.
    timings = []
    for expected in (1, 2, 3, 4):
        old_graph = dash_br.find_element("#inst-attr .modality-graph")
        began = time.perf_counter()
        dash_br.find_element("#inst-next").click()
        _wait(lambda k=expected: f"#{k}" in dash_br.find_element("#inst-summary").text,
              what="the next instance")
        _wait(lambda old=old_graph: _is_stale(old)
              and dash_br.find_elements("#inst-attr .modality-graph .heatmaplayer"),
              what="new attributions")
        timings.append(time.perf_counter() - began)
        _idle(dash_br)
    (artifacts_dir / "timings.json").write_text(json.dumps({"instance_view_s": timings}))
    print(f"instance view (next instance -> prediction and attributions drawn): "
          f"{', '.join(f'{t:.2f}' for t in timings)} s")
    dash_br.find_element("#inst-prev").click()
    dash_br.wait_for_contains_text("#inst-summary", "#3", timeout=TIMEOUT)
    _idle(dash_br)

    # Switch method: the explanation and the URL follow.
    dash_br.find_element("#inst-method input[value='saliency']").click()
    dash_br.wait_for_contains_text("#inst-method-note", "Simonyan", timeout=10)
    dash_br.wait_for_contains_text("#inst-attr", "Saliency", timeout=TIMEOUT)
    assert _query(dash_br)["method"] == "saliency"

    # Interactions: click the strongest pair; it is outlined on both inputs.
    dash_br.find_element("#inst-tab .tab:nth-child(2)").click()
    dash_br.wait_for_element("#inst-inter-pairs .pair", timeout=TIMEOUT)
    _idle(dash_br)
    first = dash_br.find_element("#inst-inter-pairs .pair")
    pair_text = first.text.split("\n")[0]
    first.click()
    _wait(lambda: "pair-selected" in dash_br.find_element(
        "#inst-inter-pairs .pair").get_attribute("class"), what="the pair to be pinned")
    a_label, b_label = pair_text.split(" × ")
    dash_br.wait_for_contains_text("#inst-inter-a-graph .gtitle", a_label, timeout=10)
    dash_br.wait_for_contains_text("#inst-inter-b-graph .gtitle", b_label, timeout=10)
    pair = _query(dash_br)["pair"]
    full_page_screenshot(dash_br, artifacts_dir / "instance_interactions.png")

    # Attention: click the cell of layer 1, head 1 in the layer × head grid to open it.
    dash_br.find_element("#inst-tab .tab:nth-child(3)").click()
    dash_br.wait_for_element("#inst-attn-grid .heatmaplayer image", timeout=TIMEOUT)
    _idle(dash_br)
    shape = httpx.post(f"{live_servers.api_url}/api/v1/explain/attention", json={
        "model_id": model_id, "dataset_id": dataset_id, "index": 3},
        headers={"Authorization": f"Bearer {live_servers.admin_token}"}, timeout=60).json()
    n_layers, n_heads = shape["n_layers"], shape["n_heads"]
    _click_cell(dash_br, "inst-attn-grid", 1.5 / n_heads, 1.5 / n_layers)  # layer 1, head 1
    _wait(lambda: _query(dash_br).get("layer") == "1" and _query(dash_br).get("head") == "1",
          what="layer 1 head 1 in the URL")
    dash_br.wait_for_contains_text("#inst-attn-map .gtitle", "layer 1, head 1", timeout=TIMEOUT)
    _idle(dash_br)
    full_page_screenshot(dash_br, artifacts_dir / "instance_attention.png")

    # What if: drop the text and see the prediction move (or not).
    dash_br.find_element("#inst-tab .tab:nth-child(4)").click()
    dash_br.find_element("#inst-whatif-drop input[value='text']").click()
    dash_br.find_element("#inst-whatif-run").click()
    dash_br.wait_for_contains_text("#inst-whatif", "The prediction", timeout=TIMEOUT)
    full_page_screenshot(dash_br, artifacts_dir / "instance_whatif.png")

    # A note on this instance.
    dash_br.find_element("#inst-note-text").send_keys("the question word 'it' drives this")
    dash_br.find_element("#inst-note-add").click()
    _wait(lambda: "drives this" in dash_br.find_element("#inst-notes").text
          or dash_br.find_element("#inst-note-msg").text, what="the note or an error")
    assert "drives this" in dash_br.find_element("#inst-notes").text, (
        dash_br.find_element("#inst-note-msg").text)

    # Back to interactions, then reload the shared URL: same instance, method, tab, pair, head.
    dash_br.find_element("#inst-tab .tab:nth-child(2)").click()
    _wait(lambda: _query(dash_br).get("tab") == "inter", what="tab in the URL")
    shared = dash_br.driver.current_url
    assert "token" not in shared
    dash_br.driver.get("about:blank")
    dash_br.driver.get(shared)
    dash_br.wait_for_contains_text("#inst-summary", "#3", timeout=TIMEOUT)
    assert dash_br.find_element("#inst-method input[value='saliency']").is_selected()
    dash_br.wait_for_contains_text("#inst-notes", "drives this", timeout=TIMEOUT)
    dash_br.wait_for_element("#inst-inter-pairs .pair-selected", timeout=TIMEOUT)
    assert dash_br.find_element("#inst-inter-pairs .pair-selected").text.startswith(pair_text)
    dash_br.wait_for_contains_text("#inst-inter-a-graph .gtitle", a_label, timeout=10)
    query = _query(dash_br)
    assert (query["pair"], query["layer"], query["head"], query["method"]) == (
        pair, "1", "1", "saliency")
    assert dash_br.get_logs() in ([], None)


def test_api_errors_are_shown_not_raised(dash_br, live_servers: LiveServers,
                                         project: int, artifacts_dir: Path) -> None:
    model_id, dataset_id = _ids(live_servers, project)
    login(dash_br, live_servers)
    dash_br.driver.get(f"{live_servers.ui_url}/instance?project={project}&model={model_id}"
                       f"&dataset={dataset_id}&instance=999")
    dash_br.wait_for_contains_text("#inst-summary", "has 40 instances", timeout=TIMEOUT)
    full_page_screenshot(dash_br, artifacts_dir / "instance_missing.png")


def test_deleting_a_model_asks_first_then_removes_it(
        dash_br, live_servers: LiveServers, project: int, artifacts_dir: Path) -> None:
    login(dash_br, live_servers)
    dash_br.driver.get(f"{live_servers.ui_url}/models?project={project}")
    dash_br.wait_for_contains_text("#models-table", "digits-transformer", timeout=TIMEOUT)
    dash_br.find_element("#models-table .btn-danger").click()
    confirm = _wait(lambda: dash_br.driver.switch_to.alert, timeout=10, what="the confirmation")
    assert "cannot be undone" in confirm.text
    confirm.accept()
    dash_br.wait_for_contains_text("#models-list", "No models in this project yet", timeout=TIMEOUT)
    dash_br.wait_for_contains_text("#models-upload-status", "Deleted the model", timeout=10)
