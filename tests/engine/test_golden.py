"""Golden losses: short fp32 runs of the three model families must keep producing the training
losses recorded here. A change to initialisation, data order, augmentation, loss, optimiser or
schedule moves them far more than the tolerance; kernels of another CPU move them far less. When a
change is meant to alter training, rerun these runs and record the new values with the reason."""

import pytest

from grove.config import load_recipe
from grove.engine.loop import train
from grove.rundir import RunDir

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40

RUNS = {
    "cnn-digits": ("digits-cnn", ["train.epochs=1"]),
    "gpt-window": ("shakespeare-char-gpt", ["model.n_layer=1", "model.n_head=2", "model.n_embd=32",
                                            "data.block_size=16", "data.batch_size=16", "optim.lr=0.01",
                                            "train.max_steps=40"]),
    "lstm-stream": ("shakespeare-char-lstm", ["model.n_embd=16", "model.n_hidden=64", "data.rows=4",
                                              "data.bptt=16", "optim.lr=0.02", "train.max_steps=40"]),
}

# Mean training loss over steps 1-10, 11-20, 21-30, 31-40 (metrics.jsonl), recorded on torch 2.13.0 (CPU).
GOLDEN = {
    "cnn-digits": [2.29914, 2.25313, 2.09438, 1.53182],
    "gpt-window": [2.95083, 2.20362, 1.84612, 1.56203],
    "lstm-stream": [3.41258, 3.14937, 3.08447, 3.07766],
}


def window_losses(tmp_path, name: str) -> list[float]:
    recipe, overrides = RUNS[name]
    data_root = []
    if recipe != "digits-cnn":  # the language models read a corpus made here
        (tmp_path / "corpus").mkdir()
        (tmp_path / "corpus" / "input.txt").write_text(CORPUS)
        data_root = [f"data.root={tmp_path / 'corpus'}"]
    cfg, recipe_name = load_recipe(
        recipe,
        [f"run.dir={tmp_path}", "train.precision=fp32", "train.log_every=10", "train.seed=0", *data_root, *overrides],
    )
    run = RunDir(train(cfg, recipe_name)["run"])
    return [r["loss"] for r in run.read_metrics() if r["split"] == "train" and r["step"] % 10 == 0][:4]


@pytest.mark.parametrize("name", list(RUNS))
def test_training_losses_match_the_recorded_ones(tmp_path, name):
    assert window_losses(tmp_path, name) == pytest.approx(GOLDEN[name], rel=2e-3)
