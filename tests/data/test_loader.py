"""The batch loader: sharding, resumable order, and unreadable files during training."""

import numpy as np
import pytest
import torch
from PIL import Image

from grove.config import load_recipe
from grove.data.base import TensorData
from grove.data.loader import BatchLoader
from grove.engine.loop import train
from grove.errors import GroveError

CPU = torch.device("cpu")


def test_ranks_split_each_global_batch_and_resume_replays_the_order():
    data = TensorData(torch.arange(40)[:, None], torch.arange(40))
    whole = BatchLoader(data, 8, train=True, device=CPU, seed=3)
    batches = [y for _, y in whole.epoch(1)]
    assert len(batches) == len(whole) == 5
    ranks = [list(BatchLoader(data, 8, train=True, device=CPU, seed=3, rank=r, world_size=2).epoch(1)) for r in (0, 1)]
    for i, batch in enumerate(batches):
        together = torch.cat([ranks[0][i][1], ranks[1][i][1]])
        assert sorted(together.tolist()) == sorted(batch.tolist())
    assert [y.tolist() for _, y in whole.epoch(1, start=3)] == [b.tolist() for b in batches[3:]]
    assert [y.tolist() for _, y in whole.epoch(2)] != [b.tolist() for b in batches]


def test_eval_shards_cover_the_split_once():
    data = TensorData(torch.zeros(11, 1), torch.arange(11))
    seen = [y for r in range(3) for _, y in BatchLoader(data, 2, train=False, device=CPU, rank=r, world_size=3).epoch(0)]
    assert sorted(torch.cat(seen).tolist()) == list(range(11))


def test_empty_split_is_a_clear_error():
    with pytest.raises(GroveError, match="empty"):
        BatchLoader(TensorData(torch.zeros(0, 1), torch.zeros(0)), 4, train=True, device=CPU)


@pytest.fixture
def folder_with_a_corrupt_file(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (10, 10), dtype=np.uint8) // (2 if label == "a" else 1)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    bad = tmp_path / "train" / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return tmp_path, bad


def folder_recipe(root, base, *overrides):
    return load_recipe("digits-cnn", [
        "data.name=image_folder", f"data.root={root}", "data.image_size=8", "data.channels=1", "data.batch_size=4",
        "train.epochs=2", "train.precision=fp32", f"run.dir={base}", *overrides,
    ])


def test_unreadable_training_files_are_skipped_and_counted(folder_with_a_corrupt_file, tmp_path):
    root, bad = folder_with_a_corrupt_file
    summary = train(*folder_recipe(root, tmp_path / "runs"))
    assert summary["skipped_files"] == 1 and summary["steps"] > 0


def test_strict_mode_stops_at_the_unreadable_file(folder_with_a_corrupt_file, tmp_path):
    root, bad = folder_with_a_corrupt_file
    with pytest.raises(GroveError, match=f"cannot read {bad}.*data.strict"):
        train(*folder_recipe(root, tmp_path / "runs", "data.strict=true"))
