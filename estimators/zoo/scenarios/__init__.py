"""The demo scenarios shipped with crosslens (see ``base.Scenario``).

``list_scenarios()`` returns them in display order; ``get_scenario(name)`` finds one.
Scenarios that need an optional extra (``clinical-minilm``: the ``minilm`` extra with the
pretrained MiniLM package) are listed only where it is installed; ``unavailable()`` says
which are missing and how to get them.
"""

from __future__ import annotations

from estimators.zoo.scenarios.base import Recipe, Scenario, ScenarioModel


def list_scenarios() -> list[Scenario]:
    from estimators.zoo.scenarios import clinical, clinical_minilm, digits, interactions

    optional = [clinical_minilm.scenario()] if clinical_minilm.available() else []
    return [*interactions.scenarios(), digits.SCENARIO, clinical.SCENARIO, *optional]


def unavailable() -> dict[str, str]:
    """Scenario name -> what to install for it, for the optional scenarios not available."""
    from estimators.zoo.scenarios import clinical_minilm

    if clinical_minilm.available():
        return {}
    return {clinical_minilm.NAME: "pip install 'crosslens[minilm]' (the pretrained MiniLM)"}


def get_scenario(name: str) -> Scenario:
    scenarios = {s.name: s for s in list_scenarios()}
    if name not in scenarios:
        raise KeyError(f"unknown scenario {name!r}; available: {sorted(scenarios)}")
    return scenarios[name]


__all__ = ["Recipe", "Scenario", "ScenarioModel", "get_scenario", "list_scenarios",
           "unavailable"]
