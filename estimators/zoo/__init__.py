"""The built-in model zoo: fusion architectures, demo scenarios and their shipped weights.

``registry`` builds architectures by name (zoo and ``crosslens.models`` plugins) and loads
``.safetensors`` + JSON config pairs; ``architectures`` holds late / early / tensor fusion
and a tiny multimodal transformer; ``scenarios`` holds the demo datasets and their trained
models; ``train`` regenerates the shipped weights (``crosslens demo train``).
"""

from estimators.zoo.registry import available, build, load_model, register, save_model

__all__ = ["available", "build", "load_model", "register", "save_model"]
