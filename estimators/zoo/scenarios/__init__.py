"""The demo scenarios shipped with crosslens (see ``base.Scenario``).

``list_scenarios()`` returns them in display order; ``get_scenario(name)`` finds one.
"""

from __future__ import annotations

from estimators.zoo.scenarios.base import Recipe, Scenario, ScenarioModel


def list_scenarios() -> list[Scenario]:
    from estimators.zoo.scenarios import clinical, digits, interactions

    return [*interactions.scenarios(), digits.SCENARIO, clinical.SCENARIO]


def get_scenario(name: str) -> Scenario:
    scenarios = {s.name: s for s in list_scenarios()}
    if name not in scenarios:
        raise KeyError(f"unknown scenario {name!r}; available: {sorted(scenarios)}")
    return scenarios[name]


__all__ = ["Recipe", "Scenario", "ScenarioModel", "get_scenario", "list_scenarios"]
