"""One registry of model architectures, for the built-in zoo and for plugins.

An architecture is a factory ``params -> nn.Module``: its ``params`` are the JSON-able
constructor arguments stored in the ``.json`` config beside a ``.safetensors`` file
(DESIGN.md, "Architecture config")::

    {"architecture": "<registered name>", "params": {...}, "spec": <ModelSpec>}

Built-in architectures register with ``@register(name)``; a plugin package exposes its own
under the entry-point group ``crosslens.models`` (each entry a callable ``params ->
nn.Module``), looked up only when a name is not built in, so a broken plugin never breaks
the zoo. Weights are only ever read with ``safetensors`` (no pickle), and the loaded tensors
must match the built module's parameters and buffers key by key and shape by shape.

*External weights*: a submodule that carries an ``external_source`` attribute (e.g. a frozen
pretrained text encoder from an installed package, ``estimators.zoo.pretrained``) loads its
own weights when the architecture is built. Its keys are left out of saved files and are
optional in loaded ones: a file may carry all of them (they then replace the package's, say
after fine-tuning) or none, never a part. ``external_sources(architecture, params)`` names
what those weights are (``distribution==version``) so caches can key on them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import safetensors.torch
from pydantic import ValidationError
from torch import nn

from estimators.model import ModelSpec, MultimodalModel

Factory = Callable[[dict[str, Any]], nn.Module]
ENTRY_POINT_GROUP = "crosslens.models"

_BUILTIN: dict[str, Factory] = {}
_SOURCES: dict[str, Callable[[dict[str, Any]], list[str]]] = {}


class ConfigError(ValueError):
    """A model config or weights file does not fit its architecture; the message says how."""


def register(name: str, *, external_sources: Callable[[dict[str, Any]], list[str]] | None = None,
             ) -> Callable[[Factory], Factory]:
    """Decorator: make ``factory(params) -> nn.Module`` buildable as ``name``.

    ``external_sources(params)`` names the external weights such a module loads itself
    (see the module docstring); it must be cheap (no model building).
    """

    def decorator(factory: Factory) -> Factory:
        if name in _BUILTIN and _BUILTIN[name] is not factory:
            raise ValueError(f"architecture {name!r} is already registered")
        _BUILTIN[name] = factory
        if external_sources is not None:
            _SOURCES[name] = external_sources
        return factory

    return decorator


def external_sources(architecture: str, params: Mapping[str, Any]) -> list[str]:
    """What external weights ``architecture`` with ``params`` loads (empty for most)."""
    _load_builtins()
    describe = _SOURCES.get(architecture)
    return sorted(describe(dict(params))) if describe is not None else []


def external_prefixes(module: nn.Module) -> dict[str, str]:
    """``state_dict`` key prefix -> source of every submodule with external weights."""
    return {f"{name}.": str(sub.external_source) for name, sub in module.named_modules()
            if name and getattr(sub, "external_source", None)}


def _is_external(key: str, prefixes: Mapping[str, str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def _load_builtins() -> None:
    importlib.import_module("estimators.zoo.architectures")


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of every buildable architecture: the zoo's and those of installed plugins."""
    _load_builtins()
    return sorted(set(_BUILTIN) | set(_plugins()))


def factory(architecture: str) -> Factory:
    """The factory registered as ``architecture`` (built in first, then plugins)."""
    _load_builtins()
    if architecture in _BUILTIN:
        return _BUILTIN[architecture]
    plugin = _plugins().get(architecture)
    if plugin is None:
        raise KeyError(f"unknown architecture {architecture!r}; known architectures: "
                       f"{available()} (plugins register under the entry-point group "
                       f"{ENTRY_POINT_GROUP!r})")
    loaded = plugin.load()
    if not callable(loaded):
        raise ConfigError(f"plugin entry point {architecture!r} ({plugin.value}) is not "
                          "callable; it must be a function params -> nn.Module")
    return loaded


def build(architecture: str, params: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised module of the named architecture."""
    make = factory(architecture)
    try:
        module = make(dict(params))
    except (TypeError, KeyError, ValueError) as exc:
        raise ConfigError(f"architecture {architecture!r} rejected its params: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(f"architecture {architecture!r} returned "
                          f"{type(module).__name__}, not a torch.nn.Module")
    return module


def read_config(config: Mapping[str, Any] | Path | str) -> tuple[str, dict[str, Any], ModelSpec]:
    """Validate a config (a dict or a path to its JSON file) -> (architecture, params, spec)."""
    if isinstance(config, (str, Path)):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read model config {config}: {exc}") from exc
    if not isinstance(config, Mapping):
        raise ConfigError("a model config must be a JSON object with keys "
                          "'architecture', 'params' and 'spec'")
    missing = [k for k in ("architecture", "params", "spec") if k not in config]
    if missing:
        raise ConfigError(f"model config lacks {missing}; it needs 'architecture' (one of "
                          f"{available()}), 'params' and 'spec'")
    architecture, params = config["architecture"], config["params"]
    if not isinstance(architecture, str):
        raise ConfigError("config 'architecture' must be a string")
    if not isinstance(params, Mapping):
        raise ConfigError("config 'params' must be a JSON object of constructor arguments")
    try:
        spec = (config["spec"] if isinstance(config["spec"], ModelSpec)
                else ModelSpec.model_validate(config["spec"]))
    except ValidationError as exc:
        raise ConfigError(f"config 'spec' is not a valid ModelSpec: {exc}") from exc
    return architecture, dict(params), spec


def load_model(config: Mapping[str, Any] | Path | str, weights: Path | str) -> MultimodalModel:
    """Build the configured architecture and load ``weights`` (``.safetensors``) strictly.

    Raises ``KeyError`` for an unknown architecture and ``ConfigError`` when the config is
    invalid or the weights' keys or shapes differ from the module's.
    """
    architecture, params, spec = read_config(config)
    module = build(architecture, params)
    try:
        state = safetensors.torch.load_file(str(weights))
    except (OSError, safetensors.SafetensorError) as exc:
        raise ConfigError(f"cannot read weights {weights} as safetensors: {exc}") from exc
    full = module.state_dict()
    expected = full
    prefixes = external_prefixes(module)
    partial = [p.rstrip(".") for p in prefixes
               if 0 < sum(k.startswith(p) for k in state) < sum(k.startswith(p) for k in expected)]
    if partial:
        raise ConfigError(f"weights {Path(weights).name} carry only part of the external "
                          f"weights of {partial}; store all of them or none (they are then "
                          "loaded from their installed package)")
    if prefixes and not any(_is_external(k, prefixes) for k in state):
        expected = {k: v for k, v in expected.items() if not _is_external(k, prefixes)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k}: file {list(state[k].shape)}, model {list(expected[k].shape)}"
                   for k in sorted(set(state) & set(expected))
                   if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected {_few(unexpected)}")
        if wrong_shape:
            problems.append(f"wrong shape {_few(wrong_shape)}")
        raise ConfigError(f"weights {Path(weights).name} do not fit architecture "
                          f"{architecture!r} with these params: {'; '.join(problems)}. "
                          "Check that the config's params match the model that was saved.")
    if len(expected) < len(full):   # external weights come from their package
        module.load_state_dict(state, strict=False)
    else:   # replace, never copy into, external tensors: other models share their storage
        module.load_state_dict(state, strict=True, assign=bool(prefixes))
    return MultimodalModel(module, spec)


def save_model(module: nn.Module, architecture: str, params: Mapping[str, Any],
               spec: ModelSpec, out_dir: Path | str, name: str) -> tuple[Path, Path]:
    """Write ``name.json`` (config) and ``name.safetensors`` (weights) into ``out_dir``;
    external weights (frozen pretrained parts) are left out, see the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"architecture": architecture, "params": dict(params),
              "spec": spec.model_dump(mode="json")}
    config_path, weights_path = out_dir / f"{name}.json", out_dir / f"{name}.safetensors"
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    prefixes = external_prefixes(module)
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()
             if not _is_external(k, prefixes)}
    safetensors.torch.save_file(state, str(weights_path), metadata={"architecture": architecture})
    return config_path, weights_path


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
