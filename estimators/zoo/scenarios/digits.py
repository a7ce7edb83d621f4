"""Digits + question: an 8x8 handwritten digit and a yes/no question about it.

Images are scikit-learn's bundled ``load_digits`` (1,797 8x8 scans, shipped inside the
package, so nothing is downloaded), scaled to [0, 1]. Each image is asked
``QUESTIONS_PER_IMAGE`` templated questions ("is it even", "is it seven", "is it greater
than five", "is it a multiple of three"): the answer depends on the digit *and* the
question, so neither modality alone does better than the base rate (synergy in PID terms),
and an additive late-fusion model cannot represent the task. Train and test split by image,
so test images are never seen in training.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from estimators.data import MultimodalDataset
from estimators.model import ModalitySpec, ModelSpec
from estimators.zoo.architectures import embedding_path
from estimators.zoo.scenarios.base import Recipe, Scenario, split_indices

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOCAB = ["[PAD]", "[MASK]", "is", "it", "even", "odd", "greater", "less", "than", "a",
         "multiple", "of", *NUMBERS]
TEXT_LENGTH = 6
QUESTIONS_PER_IMAGE = 4
SEED = 20240


def question(kind: str, number: int) -> list[str]:
    """The words of one question of type ``kind`` about ``number``."""
    return {"even": ["is", "it", "even"], "odd": ["is", "it", "odd"],
             "equal": ["is", "it", NUMBERS[number]],
             "greater": ["is", "it", "greater", "than", NUMBERS[number]],
             "less": ["is", "it", "less", "than", NUMBERS[number]],
             "multiple": ["is", "it", "a", "multiple", "of", NUMBERS[number]]}[kind]


def answers(kind: np.ndarray, number: np.ndarray, digit: np.ndarray) -> np.ndarray:
    """Vectorised yes/no answers (1 = yes) to questions ``(kind, number)`` about ``digit``."""
    return np.select(
        [kind == "even", kind == "odd", kind == "equal", kind == "greater", kind == "less",
         kind == "multiple"],
        [digit % 2 == 0, digit % 2 == 1, digit == number, digit > number, digit < number,
         digit % np.maximum(number, 1) == 0],
        default=False).astype(np.int64)


@cache
def _all() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    n_images = images.shape[0]
    rng = np.random.default_rng(SEED)
    image_index = np.repeat(np.arange(n_images), QUESTIONS_PER_IMAGE)
    digit = digits.target[image_index]
    kinds = np.array(["even", "odd", "equal", "greater", "less", "multiple"])
    kind = kinds[rng.integers(0, len(kinds), image_index.size)]
    # "is it N": ask about the true digit half of the time, so yes and no are balanced
    other = (digit + rng.integers(1, 10, digit.size)) % 10
    number = np.where(kind == "equal", np.where(rng.random(digit.size) < 0.5, digit, other),
                      0)
    number = np.where(kind == "greater", rng.integers(0, 9, digit.size), number)
    number = np.where(kind == "less", rng.integers(1, 10, digit.size), number)
    number = np.where(kind == "multiple", rng.integers(2, 4, digit.size), number)
    labels = answers(kind, number, digit)
    token = {w: i for i, w in enumerate(VOCAB)}
    ids = np.zeros((digit.size, TEXT_LENGTH), dtype=np.int64)
    for row, (k, num) in enumerate(zip(kind, number, strict=True)):
        words = question(str(k), int(num))
        ids[row, :len(words)] = [token[w] for w in words]
    names = [f"digit{img:04d}-q{q}" for img in range(n_images)
             for q in range(QUESTIONS_PER_IMAGE)]
    return (images[torch.from_numpy(image_index)], torch.from_numpy(ids),
            torch.from_numpy(labels), names, image_index)


def generate(split: str) -> MultimodalDataset:
    images, text, labels, names, image_index = _all()
    if split == "all":
        return MultimodalDataset({"image": images, "text": text}, labels, names)
    chosen = split_indices(int(image_index.max()) + 1, 0.3, SEED)[split]
    rows = torch.from_numpy(np.flatnonzero(np.isin(image_index, chosen)))
    return MultimodalDataset({"image": images[rows], "text": text[rows]}, labels[rows],
                             [names[i] for i in rows.tolist()])


SPEC = ModelSpec(
    modalities=[
        ModalitySpec(name="image", kind="image", shape=(1, 8, 8),
                     display={"mean": [0.0], "std": [1.0], "value_range": [0.0, 1.0],
                              "caption": "8x8 handwritten digit (scikit-learn digits)"}),
        ModalitySpec(name="text", kind="text", shape=(TEXT_LENGTH,), dtype="int64",
                     embedding=embedding_path("text"), vocab=VOCAB, pad_id=0, mask_id=1,
                     display={"caption": "question about the digit"}),
    ],
    classes=["no", "yes"],
)

SCENARIO = Scenario(
    name="digits-question",
    title="Digits + question",
    description=(
        "Each example is a small handwritten digit and a yes/no question about it, such as "
        "'is it even' or 'is it greater than five'. The answer needs both: the image alone "
        "does not say what is asked, and the question alone does not say which digit it is. "
        "Models that simply add up what each input says (late fusion) cannot solve it; "
        "models that combine the two (early fusion, tensor fusion, the transformer) can. "
        "The transformer answers from its question words, so its attention shows which "
        "image patches each word looks at."),
    spec=SPEC,
    generate=generate,
    recipes=(
        Recipe("transformer", "transformer",
               {"dim": 48, "heads": 4, "layers": 2, "mlp": 96, "image_patch": 2,
                "readout": "text", "seed": 0}, epochs=30, lr=2e-3, batch_size=64),
        Recipe("early_fusion", "early_fusion", {"dim": 48, "hidden": 96, "seed": 0},
               epochs=20, lr=4e-3, batch_size=64),
        Recipe("tensor_fusion", "tensor_fusion", {"dim": 32, "hidden": 64, "rank": 4, "seed": 0},
               epochs=20, lr=4e-3, batch_size=64),
        Recipe("late_fusion", "late_fusion", {"dim": 32, "hidden": 64, "seed": 0},
               epochs=15, lr=3e-3, batch_size=64),
    ),
)
