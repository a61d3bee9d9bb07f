"""Two data-parallel processes (gloo on CPU) train as one process does with the same global batch."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import only_run_dir, run_grove
from grove.rundir import RunDir

ARGS = ["digits-cnn", "train.epochs=2", "train.precision=fp32", "train.log_every=10"]


@pytest.mark.e2e
def test_two_processes_match_one_process(tmp_path):
    one = run_grove("train", *ARGS, f"run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    two = run_grove("train", *ARGS, f"run.dir={tmp_path / 'two'}", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    assert "x2" in two.stdout and two.stdout.count("done:") == 1  # rank 0 alone reports

    run_one, run_two = RunDir(only_run_dir(tmp_path / "one")), RunDir(only_run_dir(tmp_path / "two"))
    a = load_file(run_one.checkpoint("last") / "model.safetensors")
    b = load_file(run_two.checkpoint("last") / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    # metrics are reduced over both ranks: same counts, same figures
    s1, s2 = run_one.read_json("summary.json"), run_two.read_json("summary.json")
    assert s1["count"] == s2["count"] and s2["processes"] == 2
    assert abs(s1["accuracy"] - s2["accuracy"]) < 0.01
    assert s1["confusion_matrix"] == s2["confusion_matrix"] or abs(s1["loss"] - s2["loss"]) < 1e-3


@pytest.mark.e2e
def test_a_user_error_in_several_processes_is_one_line(tmp_path):
    result = run_grove("train", *ARGS, "data.batch_size=33", f"run.dir={tmp_path}", "--nproc", "2")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("must divide evenly" in e for e in errors)
    assert not list(tmp_path.glob("*/*"))  # no run directory for a run that never started
