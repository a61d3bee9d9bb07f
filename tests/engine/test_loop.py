"""The training loop on the bundled digits: equivalences, run directory, failure paths."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from grove.config import load_recipe
from grove.engine.loop import train
from grove.errors import GroveError
from grove.rundir import RunDir


def digits_run(tmp_path, *overrides, recipe="digits-cnn"):
    cfg, name = load_recipe(
        recipe,
        [f"run.dir={tmp_path}", "train.precision=fp32", "train.log_every=5", "train.epochs=2", *overrides],
    )
    summary = train(cfg, name)
    return summary, RunDir(summary["run"])


def last_weights(run: RunDir) -> dict:
    return load_file(run.checkpoint("last") / "model.safetensors")


def test_digits_run_writes_a_complete_run_directory(tmp_path):
    summary, run = digits_run(tmp_path)
    assert summary["accuracy"] > 0.8 and summary["split"] == "test"
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "summary.json", "plots/loss.png",
                 "plots/accuracy.png", "plots/confusion_test.png"):
        assert (run.path / name).is_file(), name
    assert list(run.tensorboard.glob("events.out.tfevents.*"))
    assert (run.checkpoints / "last").is_symlink() and (run.checkpoint("best") / "model.safetensors").is_file()
    records = run.read_metrics()
    assert {r["split"] for r in records} == {"train", "val"}
    assert sum(r["split"] == "val" for r in records) == 2
    meta = run.read_json("meta.json")
    assert meta["model"]["options"] == {"num_classes": 10, "in_channels": 1, "image_size": 8}
    assert run.read_config()["train"]["epochs"] == 2
    saved = json.loads((run.path / "summary.json").read_text())
    assert len(saved["confusion_matrix"]) == 10 and saved["speed"]["precision"] == "fp32"
    assert saved["params"] == 53_002  # seed_cnn on 8x8 grey digits
    # nothing but finished checkpoints: no temporary files or directories left behind
    assert not [p for p in run.path.rglob(".*tmp*")]


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    _, whole = digits_run(tmp_path / "a", "train.epochs=1", "train.grad_accum=1")
    _, accumulated = digits_run(tmp_path / "b", "train.epochs=1", "train.grad_accum=4")
    a, b = last_weights(whole), last_weights(accumulated)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_batch_that_does_not_split_into_micro_batches_is_refused(tmp_path):
    with pytest.raises(GroveError, match="grad_accum"):
        digits_run(tmp_path, "train.grad_accum=5")


def test_nan_loss_stops_with_a_clear_message_and_keeps_checkpoints_finite(tmp_path):
    # lr so large the loss overflows within the first epoch
    with pytest.raises(GroveError, match="NaN or infinite.*optim.lr"):
        digits_run(tmp_path, "optim.lr=1e12", "schedule.name=constant", "train.label_smoothing=0")
    runs = [p for p in tmp_path.glob("*/*") if p.is_dir()]
    assert len(runs) <= 1  # none when it diverged before its first checkpoint: nothing half-written is kept
    last = RunDir(runs[0]).checkpoint("last") if runs else None
    if runs:  # a run kept has a checkpoint, written before the divergence, with finite weights
        assert last is not None and all(torch.isfinite(t).all() for t in load_file(last / "model.safetensors").values())


def test_nan_policy_skip_skips_the_bad_steps(tmp_path):
    summary, run = digits_run(tmp_path, "optim.lr=1e12", "schedule.name=constant", "train.nan_policy=skip", "train.epochs=1")
    assert summary["skipped_steps"] > 0
    assert all(torch.isfinite(t).all() for t in last_weights(run).values())


def test_ema_weights_are_what_is_saved(tmp_path):
    _, plain = digits_run(tmp_path / "a", "train.epochs=1")
    _, ema = digits_run(tmp_path / "b", "train.epochs=1", "train.ema_decay=0.9")
    state = torch.load(ema.checkpoint("last") / "state.pt", weights_only=True)
    saved, raw = last_weights(ema), state["raw_weights"]
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if saved[k].is_floating_point())
    # the raw weights of the EMA run are the plain run's weights: EMA never feeds back
    assert all(torch.equal(raw[k], last_weights(plain)[k]) for k in raw)


def test_early_stopping_ends_the_run(tmp_path):
    # a constant tiny lr makes no progress, so validation accuracy stops improving at once
    summary, _ = digits_run(
        tmp_path, "train.epochs=20", "train.early_stopping_patience=1", "optim.lr=1e-9", "schedule.name=constant"
    )
    assert summary["epochs"] < 20


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle", "step"])
def test_schedules_shape_the_learning_rate(tmp_path, schedule):
    _, run = digits_run(tmp_path, f"schedule.name={schedule}", "schedule.step_epochs=1", "schedule.warmup_epochs=0", "train.log_every=1")
    lrs = [r["lr"] for r in run.read_metrics() if r["split"] == "train"]
    peak = max(lrs)
    assert math.isclose(peak, 0.05, rel_tol=0.05) or schedule == "onecycle"
    if schedule == "constant":
        assert min(lrs) == max(lrs)
    else:
        assert lrs[-1] < peak / 2


def test_adamw_and_clipping_and_label_smoothing_train(tmp_path):
    summary, _ = digits_run(
        tmp_path, "optim.name=adamw", "optim.lr=0.003", "train.clip_grad_norm=1.0", "train.label_smoothing=0.1"
    )
    assert summary["accuracy"] > 0.8


def test_bf16_autocast_trains(tmp_path):
    summary, _ = digits_run(tmp_path, "train.precision=bf16", "train.channels_last=true")
    assert summary["speed"]["precision"] == "bf16" and summary["accuracy"] > 0.8


def test_fp16_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: fp16 is allowed")
    with pytest.raises(GroveError, match="fp16 needs a CUDA GPU"):
        digits_run(tmp_path, "train.precision=fp16")


@pytest.mark.e2e
def test_compiled_training_matches_eager(tmp_path):
    eager, _ = digits_run(tmp_path / "a", "train.epochs=1")
    compiled, _ = digits_run(tmp_path / "b", "train.epochs=1", "train.compile=true")
    assert compiled["speed"]["compile"] is True
    assert abs(compiled["loss"] - eager["loss"]) < 1e-3
