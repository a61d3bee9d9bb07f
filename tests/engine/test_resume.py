"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

import pytest

from conftest import only_run_dir, run_grove, same_final_weights, train_killed_and_resumed
from grove.rundir import RunDir

# Small batches make many steps, so there is time to kill the run between checkpoints.
ARGS = ["digits-cnn", "data.batch_size=8", "train.epochs=6", "train.checkpoint_every=20", "train.log_every=10",
        "train.precision=fp32", "data.crop_padding=1"]


def val_records(run: RunDir):
    return [(r["step"], r["epoch"], r["loss"], r["accuracy"]) for r in run.read_metrics() if r["split"] == "val"]


def train_records(run: RunDir):
    return [(r["step"], r["loss"], r["accuracy"], r["lr"]) for r in run.read_metrics() if r["split"] == "train"]


@pytest.mark.e2e
@pytest.mark.parametrize("kill_after_step", [70, 500])
def test_sigkill_then_resume_gives_identical_weights_and_metrics(tmp_path, kill_after_step):
    full_run, cut_run = train_killed_and_resumed(tmp_path, ARGS, kill_after_step)
    assert same_final_weights(full_run, cut_run)
    assert val_records(full_run) == val_records(cut_run)
    assert train_records(full_run) == train_records(cut_run)
    full_summary, cut_summary = full_run.read_json("summary.json"), cut_run.read_json("summary.json")
    for key in ("accuracy", "loss", "top5", "steps", "best_step"):
        assert full_summary[key] == cut_summary[key], key


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    first = run_grove("train", "digits-cnn", "train.epochs=1", "train.precision=fp32", f"run.dir={tmp_path}")
    assert first.returncode == 0
    run = RunDir(only_run_dir(tmp_path))
    import shutil

    shutil.rmtree(run.checkpoints)  # as if killed before the first checkpoint
    (run.path / "summary.json").unlink()
    again = run_grove("train", "--resume", run.path)
    assert again.returncode == 0, again.stderr
    assert run.checkpoint("last") is not None
    assert sum(r["split"] == "val" for r in run.read_metrics()) == 1


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path):
    result = run_grove("train", "--resume", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not a grove run directory" in result.stderr
