import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CORPUS, LM, recipe_run
from grove.cli import main
from grove.config import validate
from grove.data.base import TensorData
from grove.data.loader import BatchLoader
from grove.engine import loop
from grove.privacy.audit import attack_figures, audit_run, example_losses, subset
from grove.tasks.ctc import CTCTask


# -- the attacks' figures --------------------------------------------------------------------------
def test_separated_scores_are_found():
    rng = np.random.default_rng(0)
    member_loss, non_member_loss = np.exp(rng.normal(-6, 1, 500)), np.exp(rng.normal(-1, 1, 500))  # 5 sd apart
    figures = attack_figures(-member_loss, -non_member_loss)
    assert figures["auc"] > 0.99 and figures["tpr_at_1pct_fpr"] > 0.9


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(0)
    figures = attack_figures(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(figures["auc"] - 0.5) < 0.03 and figures["tpr_at_1pct_fpr"] < 0.03


def test_tpr_at_low_fpr_by_hand():
    # 100 non-members score 0..99: a threshold above 98 lets one of them (1% FPR) through, and
    # with it the 30 members at 100 and the 20 at 98.5; the other 50 members score below all.
    members = np.r_[np.full(30, 100.0), np.full(20, 98.5), np.full(50, -1.0)]
    figures = attack_figures(members, np.arange(100.0))
    assert figures["tpr_at_1pct_fpr"] == pytest.approx(0.5)
    assert figures["auc"] == pytest.approx((30 * 100 + 20 * 99) / 100**2)


# -- per-example losses and subsets ------------------------------------------------------------------
class Utterances:
    """A map-style split of CTC items (frame log-probs stand in for features) with `collate`."""

    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.items = [(torch.randn(4, 6 + i % 3, generator=g).log_softmax(0), torch.arange(1, 2 + i % 3)) for i in range(n)]
        self.lengths = [6 + i % 3 for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def path(self, i):
        return f"utterance {i}"

    def collate(self, items):
        frames = torch.nn.utils.rnn.pad_sequence([x.T for x, _ in items], batch_first=True)  # (B, T, V)
        tokens = torch.nn.utils.rnn.pad_sequence([y for _, y in items], batch_first=True)
        return ({"features": frames, "lengths": torch.tensor([x.shape[1] for x, _ in items])},
                {"tokens": tokens, "lengths": torch.tensor([len(y) for _, y in items])})


def fake_run(task, model):
    """What example_losses reads of a loaded run."""
    recipe = SimpleNamespace(data=SimpleNamespace(eval_batch_size=None, strict=True))
    return SimpleNamespace(recipe=recipe, device=torch.device("cpu"), task=task, model=model, transform=lambda x, train: x)


def test_ctc_losses_per_utterance_average_to_the_task_loss():
    data, index = Utterances(9), torch.tensor([7, 2, 4, 0, 5])
    part = subset(data, index)
    assert [part.path(i) for i in range(2)] == ["utterance 7", "utterance 2"]
    assert part.lengths.tolist() == [data.lengths[i] for i in index]
    task, model = CTCTask(alphabet=["", "a", "b", "c"]), lambda features, lengths: (features, lengths)
    losses, hits = example_losses(fake_run(task, model), part)
    inputs, targets = data.collate([data[int(i)] for i in index])
    assert hits is None and losses.shape == (5,)
    assert losses.mean() == pytest.approx(float(task.step(model, inputs, targets)[0]), rel=1e-5)


def test_in_memory_subset_is_gathered_on_the_device():
    data = TensorData(torch.arange(10.0)[:, None], torch.arange(10) % 3)
    part = subset(data, torch.tensor([9, 3, 5]))
    (inputs, targets), = BatchLoader(part, 8, train=False, device=torch.device("cpu")).epoch(0)
    assert inputs[:, 0].tolist() == [9, 3, 5] and targets.tolist() == [0, 0, 2] and part.path(0) == "in-memory data #9"


# -- runs ------------------------------------------------------------------------------------------------
def noise_images(root, n_train: int, n_test: int):
    """root/{train,test}/<class>/*.png of random 8x8 noise: a class says nothing about its images,
    so a model can only learn the training labels by heart."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            folder = root / split / "ab"[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def noise_run(base, n_train: int, n_test: int, epochs: int, max_steps: int | None = None, privacy: dict | None = None):
    """A seed_cnn run on noise_images; `privacy` is the recipe's privacy section."""
    recipe = validate({
        "model": {"name": "seed_cnn"},
        "data": {"name": "image_folder", "root": str(noise_images(base / "images", n_train, n_test)), "image_size": 8,
                 "channels": 1, "flip": False, "batch_size": 16},
        "optim": {"name": "sgd", "lr": 0.05},
        "schedule": {"name": "constant"},
        "train": {"epochs": epochs, "max_steps": max_steps, "precision": "fp32", "device": "cpu"},
        "privacy": privacy or {},
        "run": {"dir": str(base / "runs")},
    })
    return Path(loop.train(recipe, "noise")["run"])


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A run that learnt 72 random labels by heart, and 80 held-out images it never saw."""
    return noise_run(tmp_path_factory.mktemp("memorised"), n_train=80, n_test=80, epochs=20)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_audit_finds_a_memorised_training_set(memorised, capsys):
    capsys.readouterr()
    assert main(["audit", str(memorised), "--checkpoint", "last", "--reference-steps", "40", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = json.loads((memorised / "audit.json").read_text())
    assert set(result["attacks"]) == {"loss", "calibrated"}
    assert result["members"] == result["non_members"] == 40 and result["split"] == "test"
    # labels of noise images cannot be learnt: the reference does no better than guessing on others
    assert result["attacks"]["calibrated"]["reference"] == {"examples": 40, "steps": 40, "learned": False}
    assert result["accuracy"]["members"] > 0.95 and result["accuracy"]["gap"] > 0.3
    for name, figures in result["attacks"].items():
        assert figures["auc"] > {"loss": 0.9, "calibrated": 0.65}[name], (name, figures)
        assert f"\n{name} " in out
    assert "no better than chance" in out and str(memorised / "audit.json") in out


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_audit_without_reference_as_json(memorised, capsys):
    capsys.readouterr()
    assert main(["audit", str(memorised), "--no-reference", "--members", "30", "--json", "--seed", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["attacks"]) == ["loss"] and result["members"] == result["non_members"] == 30
    assert result["seed"] == 1 and result["checkpoint"] == "best"
    assert json.loads((memorised / "audit.json").read_text()) == result


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_private_run_leaks_less_and_its_reference_trains_privately_too(memorised, tmp_path, monkeypatch):
    private = noise_run(tmp_path, n_train=80, n_test=80, epochs=20, privacy={"noise_multiplier": 2.0})  # epsilon ~4
    trained, reference_private = loop.train, []

    def train(recipe, name, **options):
        reference_private.append(recipe.privacy.enabled)
        return trained(recipe, name, **options)

    monkeypatch.setattr(loop, "train", train)
    result = audit_run(private, "last", reference_steps=40, device="cpu")
    assert reference_private == [True] and set(result["attacks"]) == {"loss", "calibrated"}
    plain = audit_run(memorised, "last", reference=False, device="cpu")
    assert result["attacks"]["loss"]["auc"] < 0.7 and plain["attacks"]["loss"]["auc"] > 0.9


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_audit_refuses_what_it_cannot_audit(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "input.txt").write_text(CORPUS)
    lm = recipe_run(tmp_path / "lm", "shakespeare-char-gpt", [f"data.root={tmp_path / 'corpus'}", *LM, "model.n_layer=1",
                                                              "model.n_head=2", "data.block_size=8"])
    small = noise_run(tmp_path / "small", n_train=40, n_test=10, epochs=1, max_steps=1)
    capsys.readouterr()
    for args, message in [
        ((lm,), "membership of a window is not defined per example"),
        ((small,), "the test split has 10 examples"),
        ((tmp_path / "missing",), "does not exist"),
        ((small, "--members", "0"), "--members must be at least 1"),
    ]:
        assert main(["audit", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
