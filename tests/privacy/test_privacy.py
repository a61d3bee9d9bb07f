"""Differentially private training: per-example gradients, clipping, accounting, the loader's
Poisson sampling, and private runs end to end (resume, two processes, bad settings)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import (
    build, inputs_like, keyword_folder, logits_of, only_run_dir, run_grove, same_final_weights, train_killed_and_resumed,
)
from grove import privacy
from grove.cli import main
from grove.config import PrivacyConfig, apply_override, load_recipe, validate
from grove.data.base import TensorData
from grove.data.loader import BatchLoader
from grove.engine.loop import train
from grove.registry import list_models
from grove.rundir import RunDir, load_run

pytest.importorskip("opacus", reason="needs the privacy extra (bash scripts/install.sh test installs it)")

TINY_DP = ["privacy.epsilon=8", "train.precision=fp32", "train.log_every=5"]


def plan_for(epsilon=None, noise=None, accountant="rdp", n=1000, batch=50, steps=200, **rest):
    cfg = PrivacyConfig(epsilon=epsilon, noise_multiplier=noise, accountant=accountant, **rest)
    return privacy.plan(cfg, n, batch, steps)


# -- per-example gradients ----------------------------------------------------------------------
def without_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):  # attention's dropout_p
            module.dropout = 0.0
    return model


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.pretrained) if n == "hf_classifier" else n for n in list_models()])
def model_name(request):
    return request.param


@pytest.fixture
def float64():
    """float64 throughout (a deep net's float32 sums differ in their last bits between batch sizes)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_per_example_gradients_equal_single_example_gradients(model_name, float64):
    """Every layer type of the zoo, after the private conversions (GroupNorm, DPLSTM ...)."""
    model = without_dropout(build(model_name).train())
    if hasattr(model, "init_from_data"):
        model.init_from_data(model.example_input(8))
    model, _ = privacy.private_layers(model, pretrained=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    p = plan_for(noise=1.0)
    wrapped, _ = privacy.make_private(model, optimizer, p, 3, torch.Generator(), distributed=False)
    x = model.example_input(3)

    def inputs(batch):
        return inputs_like(model.input_specs, batch) if hasattr(model, "input_specs") else (batch,)

    logits_of(wrapped(*inputs(x))).square().mean().backward()
    params = [q for q in model.parameters() if q.requires_grad]
    per_example = torch.cat([q.grad_sample.flatten(1) for q in params], dim=1)
    for i in range(3):
        model.zero_grad()
        logits_of(model(*inputs(x[i : i + 1]))).square().mean().backward()
        single = torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).flatten() for q in params])
        error = (per_example[i] - single).norm() / single.norm()
        assert error <= 1e-5, f"example {i}: relative error {error:.2e}"


def test_clipped_per_example_gradients_never_exceed_max_grad_norm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    p = plan_for(noise=1.0, max_grad_norm=0.5)
    wrapped, dp = privacy.make_private(model, optimizer, p, 16, torch.Generator(), distributed=False)
    x = torch.randn(16, 6) * 50  # large inputs: large gradients
    wrapped(x).square().mean().backward()
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in dp.grad_samples], dim=1).norm(dim=1)
    assert (norms > 0.5).all()  # every example needs clipping ...
    dp.clip_and_accumulate()
    factor = (0.5 / (norms + 1e-6)).clamp(max=1.0)
    clipped = [g * factor.view(-1, *[1] * (g.dim() - 1)) for g in dp.grad_samples]
    clipped_norms = torch.stack([g.flatten(1).norm(dim=1) for g in clipped], dim=1).norm(dim=1)
    assert (clipped_norms <= 0.5 * (1 + 1e-5)).all()  # ... and none exceeds the bound after it
    summed = torch.cat([q.summed_grad.flatten() for q in model.parameters()])
    torch.testing.assert_close(summed, torch.cat([g.sum(0).flatten() for g in clipped]))
    assert summed.norm() <= 16 * 0.5


# -- accounting ---------------------------------------------------------------------------------
# Opacus' own test values (opacus/tests/accountants_test.py): noise 1.5, sampling rate 0.04, delta
# 1e-5, over int(90 / 0.04) steps for RDP and int(90 // 0.04) (one fewer, floating point) for PRV.
@pytest.mark.parametrize("accountant, steps, reference", [("rdp", 2250, 7.32911117143), ("prv", 2249, 6.777395712150674)])
def test_epsilon_matches_opacus_reference_values(accountant, steps, reference):
    p = privacy.PrivacyPlan(noise_multiplier=1.5, sample_rate=0.04, delta=1e-5, max_grad_norm=1.0,
                            accountant=accountant, steps=steps, target_epsilon=None, delta_default=False)
    assert p.epsilon(steps) == pytest.approx(reference, rel=1e-6)
    assert p.epsilon(0) == 0.0 and p.epsilon(100) < p.epsilon(steps)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("target", [1.0, 2.0, 8.0])
def test_the_noise_found_for_a_target_epsilon_never_overshoots_it(accountant, target):
    p = plan_for(epsilon=target, accountant=accountant)
    spent = p.epsilon(p.steps)
    assert spent <= target
    assert spent >= 0.95 * target  # and it does not add much more noise than needed
    assert p.steps == 200 and p.delta == 1e-4  # the default: a power of ten below 1/(10 x 1000)


def test_a_budget_with_a_fixed_noise_stops_training_before_it_is_spent():
    p = plan_for(epsilon=2.0, noise=0.8, steps=5000)
    assert 0 < p.steps < 5000
    assert p.epsilon(p.steps) <= 2.0 < p.epsilon(p.steps + 1)
    assert "stops training after" in p.describe(1000, 5000)


def test_default_delta_is_below_one_over_ten_times_the_examples():
    for n in (10, 1293, 60_000, 1_000_000):
        assert privacy.default_delta(n) < 1 / (10 * n) * 1.0001


# -- sampling -------------------------------------------------------------------------------------
def test_poisson_batches_are_drawn_from_the_seed_and_epoch_and_shared_by_ranks():
    data = TensorData(torch.arange(400).float().unsqueeze(1), torch.arange(400))
    one = BatchLoader(data, 40, train=True, device=torch.device("cpu"), seed=3, poisson=True)
    again = BatchLoader(data, 40, train=True, device=torch.device("cpu"), seed=3, poisson=True)
    batches = [y for _, y in one.epoch(0)]
    assert len(batches) == len(one) == 10
    assert all(torch.equal(a, b) for a, b in zip(batches, [y for _, y in again.epoch(0)]))
    sizes = [len(b) for b in batches]
    assert len(set(sizes)) > 1 and 25 < sum(sizes) / len(sizes) < 55  # Poisson around 40
    assert not torch.equal(batches[0], next(one.epoch(1))[1])  # a new draw every epoch
    resumed = [y for _, y in one.epoch(0, start=4)]
    assert all(torch.equal(a, b) for a, b in zip(batches[4:], resumed))
    ranks = [[y for _, y in BatchLoader(data, 40, train=True, device=torch.device("cpu"), seed=3, poisson=True,
                                         rank=r, world_size=2).epoch(0)] for r in (0, 1)]
    for whole, a, b in zip(batches, *ranks):
        assert torch.equal(torch.sort(torch.cat([a, b])).values, whole)


# -- private runs ---------------------------------------------------------------------------------
def digits_run(tmp_path, *overrides, name="digits-cnn"):
    recipe, recipe_name = load_recipe(name, [f"run.dir={tmp_path}", *TINY_DP, *overrides])
    return train(recipe, recipe_name)


@pytest.mark.e2e
def test_a_private_run_records_its_budget_and_a_converted_model_loads_back(tmp_path, capsys):
    summary = train(validate({  # ds_cnn has BatchNorm layers
        "model": {"name": "ds_cnn", "channels": 8, "n_blocks": 1},
        "data": {"name": "audio_folder", "root": str(keyword_folder(tmp_path / "clips")), "clip_seconds": 0.5,
                 "val_fraction": 0.2, "test_fraction": 0.2, "batch_size": 3},
        "privacy": {"epsilon": 3}, "train": {"epochs": 2, "precision": "fp32"}, "run": {"dir": str(tmp_path)},
    }), "keywords-dp")
    out = capsys.readouterr().out
    assert "BatchNorm layer(s) replaced by GroupNorm" in out and "noise multiplier" in out
    run = RunDir(summary["run"])
    assert 0 < summary["privacy"]["epsilon"] <= 3.0 and summary["privacy"]["steps"] == summary["steps"] > 0
    assert "delta 0.01 (default: below 1/" in out  # under 10 training clips
    val = [r for r in run.read_metrics() if r["split"] == "val"]
    assert val and all(0 < r["epsilon"] <= 3.0 for r in val)
    assert run.read_meta().model.converted == [privacy.GROUP_NORM]
    loaded = load_run(run.path)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in loaded.model.modules())
    assert main(["report", str(run.path)]) == 0
    page = (run.path / "report.html").read_text()
    assert "Differential privacy of the training" in page and "noise_multiplier" in page


@pytest.mark.e2e
def test_empty_poisson_batches_take_a_noise_only_step(tmp_path):
    # an expected batch of 1: about a third of the batches are empty
    summary = digits_run(tmp_path, "data.batch_size=1", "train.max_steps=30", "privacy.epsilon=50")
    assert summary["steps"] == 30 and summary["skipped_steps"] == 0


@pytest.mark.e2e
def test_private_text_models_a_transformer_and_an_lstm_whose_weights_load_into_nn_lstm(tmp_path, capsys):
    small = ["data.n_train=200", "data.n_val=40", "data.n_test=40", "train.max_steps=3"]
    summary = digits_run(tmp_path / "encoder", *small, "model.n_layer=1", name="sentiment-demo-encoder")
    assert summary["privacy"]["steps"] == 3
    raw = {"model": {"name": "rnn_classifier", "n_embd": 16, "n_hidden": 16},
           "data": {"name": "sentiment_demo", "tokenizer": "word", "batch_size": 32},
           "privacy": {"epsilon": 8}, "train": {"precision": "fp32"}, "run": {"dir": str(tmp_path / "rnn")}}
    for item in small:
        apply_override(raw, item)
    summary = train(validate(raw), "rnn-dp")
    assert "LSTM replaced by Opacus" in capsys.readouterr().out
    model = load_run(summary["run"]).model
    assert any(type(m) is torch.nn.LSTM for m in model.modules())  # DPLSTM saved nn.LSTM's state dict


@pytest.mark.e2e
def test_a_private_run_killed_and_resumed_is_bit_identical(tmp_path):
    args = ["digits-cnn", *TINY_DP, "data.batch_size=8", "train.epochs=1", "train.checkpoint_every=20"]
    full_run, cut_run = train_killed_and_resumed(tmp_path, args, kill_after_step=40)
    assert same_final_weights(full_run, cut_run)
    epsilons = [[r["epsilon"] for r in run.read_metrics() if r["split"] == "val"] for run in (full_run, cut_run)]
    assert epsilons[0] == epsilons[1]


@pytest.mark.e2e
def test_two_private_processes_match_one(tmp_path):
    args = ["digits-cnn", *TINY_DP, "train.epochs=1", "data.batch_size=64"]
    one = run_grove("train", *args, f"run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    two = run_grove("train", *args, f"run.dir={tmp_path / 'two'}", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    a = load_file(RunDir(only_run_dir(tmp_path / "one")).checkpoint("last") / "model.safetensors")
    b = load_file(RunDir(only_run_dir(tmp_path / "two")).checkpoint("last") / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    s1 = RunDir(only_run_dir(tmp_path / "one")).read_json("summary.json")
    s2 = RunDir(only_run_dir(tmp_path / "two")).read_json("summary.json")
    assert s1["privacy"] == s2["privacy"]


@pytest.mark.parametrize("override, message", [
    (["privacy.epsilon=-1"], "privacy.epsilon"),
    (["privacy.epsilonn=8"], "unknown recipe key 'privacy.epsilonn'"),
    (["privacy.epsilon=8", "privacy.accountant=gdp"], "privacy.accountant"),
    (["privacy.epsilon=8", "train.compile=true"], "train.compile=true cannot be used with privacy"),
    (["privacy.epsilon=8", "train.precision=fp16"], "train.precision=fp16 cannot be used with privacy"),
    (["privacy.epsilon=8", "privacy.delta=0.5"], "privacy.delta=0.5 is too large"),
    (["privacy.epsilon=0.01", "privacy.noise_multiplier=0.3"], "is spent before the first step"),
])
def test_bad_privacy_settings_are_one_line(tmp_path, capsys, override, message):
    assert main(["train", "digits-cnn", f"run.dir={tmp_path}", *override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*/*"))  # no run directory is left behind


def test_a_token_stream_cannot_be_trained_privately(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "input.txt").write_text("to be or not to be\n" * 200)
    args = ["train", "shakespeare-char-lstm", f"data.root={tmp_path / 'corpus'}", f"run.dir={tmp_path}",
            "privacy.epsilon=8"]
    assert main(args) == 2
    assert "token stream" in capsys.readouterr().err


@pytest.fixture(scope="module")
def private_digits(tmp_path_factory):
    recipe, name = load_recipe("digits-cnn-dp", [f"run.dir={tmp_path_factory.mktemp('dp')}", "train.max_steps=4",
                                                 "train.precision=fp32"])
    return train(recipe, name)["run"]


@pytest.mark.e2e
def test_int8_export_of_a_private_run_calibrates_on_held_out_inputs(private_digits, monkeypatch):
    import grove.export as export

    asked, held_out_batch = [], export._held_out_batch

    def spy(loaded, n, split="val"):
        asked.append(split)
        return held_out_batch(loaded, n, split)

    monkeypatch.setattr(export, "_held_out_batch", spy)
    assert main(["export", private_digits, "--int8", "--out", str(Path(private_digits) / "int8")]) == 0
    assert asked and "train" not in asked  # static int8's min/max ranges would leak training examples


def test_auditing_a_run_still_training_is_one_line(private_digits, tmp_path, capsys):
    import shutil

    unfinished = tmp_path / "unfinished"
    shutil.copytree(private_digits, unfinished, symlinks=True)
    (unfinished / "summary.json").unlink()
    assert main(["audit", str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert "still training" in err and err.count("\n") == 1
