"""MultimodalDataset: shape checks, batching, subsets."""

import pytest
import torch

from estimators.data import MultimodalDataset


def make(n: int = 10) -> MultimodalDataset:
    return MultimodalDataset({"a": torch.randn(n, 3), "b": torch.arange(n * 4).reshape(n, 4)},
                             torch.arange(n) % 2, [f"i{k}" for k in range(n)])


def test_batches_cover_every_row_once_in_order() -> None:
    ds = make(10)
    chunks = list(ds.batches(4))
    assert [len(y) for _, y in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat([x["b"] for x, _ in chunks]), ds.inputs["b"])


def test_subset_keeps_rows_labels_and_ids_aligned() -> None:
    ds = make(10)
    sub = ds.subset([7, 2])
    assert sub.ids == ["i7", "i2"]
    assert torch.equal(sub.inputs["b"][0], ds.inputs["b"][7])
    assert sub.labels.tolist() == [1, 0]
    assert ds.instance(3)["a"].shape == (1, 3)


@pytest.mark.parametrize(("inputs", "labels", "message"), [
    ({"a": torch.zeros(3, 2)}, torch.zeros(4, dtype=torch.long), "3 rows but there are 4"),
    ({"a": torch.zeros(3, 2)}, torch.zeros(3, 1, dtype=torch.long), "1-D"),
    ({"a": torch.zeros(3, 2)}, torch.zeros(3), "integer"),
    ({}, torch.zeros(3, dtype=torch.long), "at least one modality"),
])
def test_inconsistent_datasets_are_refused(inputs, labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultimodalDataset(inputs, labels)
