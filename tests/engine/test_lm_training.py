"""Language models through the one training loop: a GPT on next-token windows, an LSTM on token
streams (truncated BPTT), both on a tiny Tiny-Shakespeare-shaped corpus made here, and an LSTM run
killed with SIGKILL and resumed."""

import pytest
import torch

from conftest import same_final_weights, train_killed_and_resumed
from grove.config import load_recipe
from grove.data.tokenizers import load_tokenizer
from grove.engine.loop import train
from grove.rundir import RunDir

LINES = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
)

# Small models with learning rates high enough to get past the unigram plateau in a few dozen steps.
TINY_GPT = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=16", "data.batch_size=16",
            "optim.lr=0.01"]
TINY_LSTM = ["model.n_embd=16", "model.n_hidden=64", "data.rows=4", "data.bptt=16", "optim.lr=0.02"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder holding input.txt, as the tiny_shakespeare builder reads it with root=."""
    root = tmp_path_factory.mktemp("tiny_shakespeare")
    (root / "input.txt").write_text(LINES * 30)  # ~5,000 characters
    return root


def lm_run(tmp_path, recipe, corpus, *overrides):
    cfg, name = load_recipe(
        recipe,
        [f"data.root={corpus}", f"run.dir={tmp_path}", "train.precision=fp32", "train.log_every=5", *overrides],
    )
    summary = train(cfg, name)
    return summary, RunDir(summary["run"])


def train_losses(run: RunDir) -> list[float]:
    return [r["loss"] for r in run.read_metrics() if r["split"] == "train"]


@pytest.mark.parametrize(
    "recipe, overrides",
    [("shakespeare-char-gpt", TINY_GPT), ("shakespeare-char-lstm", TINY_LSTM)],
    ids=["gpt-window", "lstm-stream"],
)
def test_language_model_trains_and_its_run_keeps_the_tokenizer(tmp_path, corpus, recipe, overrides):
    summary, run = lm_run(tmp_path, recipe, corpus, *overrides, "train.max_steps=60", "train.eval_every=30")
    layout = "window" if recipe.endswith("gpt") else "stream"
    meta = run.read_json("meta.json")
    assert meta["task"] == "lm" and meta["data"]["layout"] == layout

    losses = train_losses(run)
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0], losses
    vocab = len(set(LINES))
    assert summary["loss"] < 0.8 * torch.log(torch.tensor(float(vocab))).item()  # well below uniform guessing
    assert summary["steps"] == 60 and summary["bits_per_char"] > 0

    tokenizer = load_tokenizer(run.path / "data")
    assert tokenizer.kind == "char" and tokenizer.vocab_size == vocab
    assert tokenizer.decode(tokenizer.encode("Speak, speak.", add_special_tokens=False)) == "Speak, speak."


@pytest.mark.e2e
def test_lstm_stream_run_killed_and_resumed_ends_with_identical_weights(tmp_path, corpus):
    # 72 batches an epoch; the task's hidden state at each checkpoint must carry over exactly.
    args = ["shakespeare-char-lstm", *TINY_LSTM, f"data.root={corpus}", "train.epochs=2", "train.max_steps=null",
            "train.eval_every=null", "train.checkpoint_every=20", "train.log_every=10", "train.precision=fp32"]

    def hidden_state_is_checkpointed(cut_run):
        _, state = cut_run.load_checkpoint("last")
        assert state["task"][0]["state"] is not None  # the LSTM's (h, c)

    # killed mid-epoch 1
    full_run, cut_run = train_killed_and_resumed(tmp_path, args, 40, hidden_state_is_checkpointed, timeout=60)
    assert same_final_weights(full_run, cut_run)
    val = lambda run: [(r["step"], r["loss"]) for r in run.read_metrics() if r["split"] == "val"]  # noqa: E731
    assert val(full_run) == val(cut_run) and train_losses(full_run) == train_losses(cut_run)
