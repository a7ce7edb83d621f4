"""Upload files for the browser tests: a small zoo transformer and a digits dataset zip.

Built from the zoo's digits + question scenario (image 8×8 + 6-token question, yes/no): the
tests need real files the API validates and real attention layers.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import safetensors.torch

from estimators.zoo.registry import build, save_model
from estimators.zoo.scenarios import get_scenario

TRANSFORMER = {"dim": 16, "heads": 2, "layers": 2, "mlp": 32, "image_patch": 2, "seed": 0}


def model_files(out_dir: Path, name: str = "digits-transformer") -> tuple[Path, Path]:
    """``(config.json, weights.safetensors)`` of the digits + question transformer.

    The trained demo weights shipped in the zoo when present (readable screenshots), else a
    seeded, untrained 2-layer, 2-head transformer of the same architecture.
    """
    scenario = get_scenario("digits-question")
    shipped = {m.name: m for m in scenario.models}.get("transformer")
    if shipped is not None:
        config, weights = out_dir / f"{name}.json", out_dir / f"{name}.safetensors"
        shutil.copyfile(shipped.config_path, config)
        shutil.copyfile(shipped.weights_path, weights)
        return config, weights
    recipe = next(r for r in scenario.recipes if r.architecture == "transformer")
    recipe = type(recipe)(recipe.name, recipe.architecture, TRANSFORMER)
    params = scenario.model_params(recipe)
    module = build("transformer", params).eval()
    return save_model(module, "transformer", params, scenario.model_spec(recipe), out_dir, name)


def dataset_zip(out_path: Path, n: int = 40) -> Path:
    """The first ``n`` test instances of the digits + question scenario as a dataset zip."""
    data = get_scenario("digits-question").dataset("test")
    tensors = {"image": data.inputs["image"][:n], "text": data.inputs["text"][:n],
               "labels": data.labels[:n]}
    manifest = {"format": "crosslens-dataset", "version": 1, "name": "digits-questions",
                "n": n,
                "modalities": {"image": {"file": "image.safetensors", "key": "image"},
                               "text": {"file": "text.safetensors", "key": "text"}},
                "labels": {"file": "labels.safetensors", "key": "labels"}, "ids": None}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for key, tensor in tensors.items():
            zf.writestr(f"{key}.safetensors",
                        safetensors.torch.save({key: tensor.contiguous()}))
    out_path.write_bytes(buf.getvalue())
    return out_path
