"""Explanations (grove.explain): Integrated Gradients' completeness, evidence found where a task
puts it, the deletion score, every kind of run through the API and the CLI, and bad requests."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import grove
from conftest import run_grove
from grove.data.tokenizers import WordTokenizer
from grove.errors import GroveError
from grove.explain import explain_items
from grove.explain.deletion import deletion
from grove.registry import create_model

pytest.importorskip("captum")


def as_predictor(model, modality, classes, transform=None, tokenizer=None, pad_id=0):
    """What explain_items reads from a predictor, around a model trained in the test."""
    return SimpleNamespace(model=model.eval(), task="classification", modality=modality, classes=classes,
                           device=torch.device("cpu"), transform=transform, tokenizer=tokenizer,
                           data={"pad_id": pad_id})


def fit(model, x, y, steps=300, lr=3e-3):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        i = torch.randint(0, len(x), (32,))
        loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def identity(x, train):
    return x


# -- what the methods must satisfy ----------------------------------------------------------------
@pytest.fixture(scope="module")
def quadrant_task():
    """16x16 images of noise and one bright square at a random place; class 1 also has a second
    square somewhere in the top-left quadrant. The evidence for class 1 is only there."""
    g = torch.Generator().manual_seed(0)
    n = 768
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    y = torch.arange(n) % 2

    def square(i, top, left):
        x[i, 0, top : top + 3, left : left + 3] = 1.0

    for i in range(n):
        square(i, *torch.randint(0, 14, (2,), generator=g).tolist())
        if y[i]:
            square(i, *torch.randint(0, 6, (2,), generator=g).tolist())
    x = (x - 0.3) / 0.3  # normalised, so 0 (the baseline) is the mean
    torch.manual_seed(0)
    model = fit(create_model("seed_cnn", num_classes=2, in_channels=1, image_size=16), x, y, steps=400)
    assert (model(x).argmax(-1) == y).float().mean() > 0.9
    return model, x[y == 1][:16]


@pytest.mark.parametrize("method", ["ig", "gradcam"])
def test_the_evidence_is_found_in_its_quadrant(quadrant_task, method):
    model, positives = quadrant_task
    p = as_predictor(model, "image", ["0", "1"], transform=identity)
    p.transform.mean, p.transform.std = [0.0], [1.0]
    explanations = explain_items(p, list(positives.split(1)), ["x"] * len(positives), method, targets=[1] * 16)
    shares = []
    for e in explanations:
        heat = np.clip(e.heat, 0, None)
        shares.append(heat[:8, :8].sum() / heat.sum())
    assert np.mean(shares) > 0.5, shares  # a quarter of the image holds over half the evidence (chance: 0.25)


def test_integrated_gradients_are_complete(quadrant_task):
    """Attributions sum to f(x) - f(baseline) (completeness), within 5%."""
    model, positives = quadrant_task
    p = as_predictor(model, "image", ["0", "1"], transform=identity)
    p.transform.mean, p.transform.std = [0.0], [1.0]
    explanations = explain_items(p, list(positives[:6].split(1)), ["x"] * 6, "ig", targets=[1] * 6)
    with torch.no_grad():
        at_baseline = model(torch.zeros(1, 1, 16, 16)).softmax(-1)[0, 1].item()
    for e in explanations:
        change = e.probability - at_baseline
        assert abs(e.attribution.sum() - change) <= 0.05 * abs(change) + 1e-4


@pytest.fixture(scope="module")
def keyword_task():
    """Sentences of filler words; the label is 1 exactly when the word 'excellent' is among them."""
    rng = np.random.default_rng(0)
    filler = "the a film plot was actor scene story long short music dialogue ending camera".split()
    texts, labels = [], []
    for i in range(600):
        words = list(rng.choice(filler, size=rng.integers(4, 9)))
        if i % 2:
            words.insert(int(rng.integers(0, len(words) + 1)), "excellent")
        texts.append(" ".join(words))
        labels.append(i % 2)
    tok = WordTokenizer.fit(texts, eos=False, pad=True)
    ids = tok.encode_batch(texts)
    width = max(map(len, ids))
    x = torch.tensor([row + [tok.pad_id] * (width - len(row)) for row in ids])
    model = create_model("rnn_classifier", vocab_size=tok.vocab_size, num_classes=2, n_embd=16, n_hidden=16,
                         pad_id=tok.pad_id, dropout=0.0)
    model = fit(model, x, torch.tensor(labels), steps=300, lr=1e-2)
    return model, tok


@pytest.mark.parametrize("method", ["ig", "occlusion"])
def test_the_deciding_keyword_ranks_first(keyword_task, method):
    model, tok = keyword_task
    p = as_predictor(model, "text", ["other", "keyword"], tokenizer=tok, pad_id=tok.pad_id)
    texts = ["the plot was excellent and long", "excellent music", "a long film with an excellent ending camera"]
    explanations = explain_items(p, tok.encode_batch(texts), texts, method)
    for e in explanations:
        assert e.target == "keyword"
        assert e.tokens[int(np.argmax(e.heat))] == "excellent", e.terminal(color=False)
        assert e.deletion["auc"] < e.deletion["random_auc"]


def test_text_integrated_gradients_are_complete(keyword_task):
    model, tok = keyword_task
    p = as_predictor(model, "text", ["other", "keyword"], tokenizer=tok, pad_id=tok.pad_id)
    ids = tok.encode("the scene was excellent")
    (e,) = explain_items(p, [ids], ["t"], "ig")
    with torch.no_grad():
        baseline = torch.full((1, len(ids)), tok.unk_id)  # the baseline token: <unk>
        change = e.probability - model(baseline).softmax(-1)[0, 1].item()
    assert abs(e.heat.sum() - change) <= 0.05 * abs(change)


def test_deletion_areas_rank_a_true_ordering_below_random():
    values = torch.linspace(0, 1, 50)

    def score(inputs):  # the "probability" is the mean of what is left
        return inputs.mean(-1)

    def remove(masks):
        return torch.where(masks, 0.0, values)

    ranked = deletion(score, remove, values, torch.ones(50, dtype=torch.bool))
    reversed_ = deletion(score, remove, -values, torch.ones(50, dtype=torch.bool))
    assert ranked["curve"][0] == pytest.approx(0.5) and ranked["curve"][-1] == 0
    assert ranked["auc"] < ranked["random_auc"] < reversed_["auc"]
    assert ranked["random_auc"] == reversed_["random_auc"]  # the random orders come from the seed
    assert deletion(score, remove, values, torch.zeros(50, dtype=torch.bool))["auc"] is None


def test_attention_rollout_for_a_vision_transformer():
    torch.manual_seed(0)
    model = create_model("vit", num_classes=3, in_channels=1, image_size=16, patch_size=4, dim=32, depth=2, heads=2)
    p = as_predictor(model, "image", ["a", "b", "c"], transform=identity)
    p.transform.mean, p.transform.std = [0.0], [1.0]
    (e,) = explain_items(p, [torch.randn(1, 1, 16, 16)], ["x"], "attention")
    assert e.method == "attention" and e.heat.shape == (16, 16)
    assert np.isfinite(e.heat).all() and e.heat.min() >= 0


# -- every kind of run, through the API ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["image", "text", "keyword", "ctc", "gpt", "lstm"])
def test_every_kind_of_run_explains(tiny_runs, tiny_samples, kind, tmp_path):
    run, _ = tiny_runs[kind]
    predictor = grove.load(run)
    inputs = {"gpt": ["First Cit"], "lstm": ["Speak, spe"]}.get(kind) or tiny_samples[kind][:2]
    explanations = predictor.explain(inputs)
    assert len(explanations) == len(inputs)
    if kind == "ctc":  # a two-step model's greedy path may emit nothing: explained as empty
        assert any(e.target for e in explanations)
        explanations.sort(key=lambda e: not e.target)
    for e in explanations:
        assert 0 <= e.probability <= 1 and np.isfinite(e.attribution).all()
        d = e.deletion
        if kind == "ctc" and not e.target:
            assert d["auc"] is None and not d["curve"] and e.probability == 0 and not e.attribution.any()
        else:
            assert d["curve"] and d["auc"] is not None and len(d["curve"]) == len(d["random_curve"])
        json.dumps(e.to_dict())
        files = e.save(tmp_path, f"{kind}")
        assert all(f.stat().st_size > 0 for f in files)
    e = explanations[0]
    if kind in ("text", "gpt", "lstm"):
        assert len(e.tokens) == len(e.heat) and "<span" in e.html()
        assert "\x1b[48;2;" in e.terminal() and "[" in e.terminal(color=False)
    else:
        assert e.png().startswith(b"\x89PNG") and "data:image/png;base64," in e.html()
    if kind == "ctc":
        assert e.attribution.shape[0] == len(e.characters) == len(e.target)
    if kind == "image":
        assert e.method == "ig" and e.attribution.shape[0] == 1  # (C, H, W)


def test_a_target_label_is_explained_instead_of_the_prediction(tiny_runs, tiny_samples):
    predictor = grove.load(tiny_runs["image"][0])
    for label in ("3", "7"):
        (e,) = predictor.explain(tiny_samples["image"][0], target=label)
        assert e.target == label
    with pytest.raises(GroveError, match="unknown target label '77'"):
        predictor.explain(tiny_samples["image"][0], target="77")


def test_methods_that_do_not_fit_the_model_say_which_do(tiny_runs, tiny_samples):
    text = grove.load(tiny_runs["text"][0])
    with pytest.raises(GroveError, match="does not apply to text: use ig, saliency or occlusion"):
        text.explain("a fine film", method="gradcam")
    ctc = grove.load(tiny_runs["ctc"][0])
    with pytest.raises(GroveError, match="gradcam needs a convolutional feature map"):
        ctc.explain(tiny_samples["ctc"][0], method="gradcam")
    with pytest.raises(GroveError, match="drop --target"):
        ctc.explain(tiny_samples["ctc"][0], target="a")
    with pytest.raises(GroveError, match="did you mean 'saliency'"):
        text.explain("a fine film", method="salency")
    with pytest.raises(GroveError, match="pass the run directory"):
        grove.load(tiny_runs["text"][1]).explain("a fine film")


# -- the CLI --------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_explain_cli_saves_pictures_and_prints_the_deletion_score(tiny_runs, tiny_samples, tmp_path):
    run, _ = tiny_runs["image"]
    images = tiny_samples["image"][:2]
    result = run_grove("explain", run, images[0], tmp_path / "missing.png", images[1], "--out", tmp_path / "out",
                       "--method", "saliency")
    assert result.returncode == 2  # one input could not be read; the others are explained
    assert result.stdout.count("deletion area") == 2 and "1 of 3 inputs could not be explained" in result.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert [n.split(".")[:2] for n in names] == [["digit0", "saliency"]] * 2 + [["digit1", "saliency"]] * 2
    assert {n.rsplit(".", 1)[1] for n in names} == {"npy", "png"}


def test_explain_command_texts_json_and_refusals(tiny_runs, tiny_samples, tmp_path, capsys):
    """The command's other paths, in this process (the test above runs it as a user does)."""
    from grove.cli import main

    text_run, (run, export) = tiny_runs["text"][0], tiny_runs["image"]
    capsys.readouterr()  # what training the tiny runs printed
    long_review = "a great film " * 40  # longer than a file name may be: texts are never taken for paths
    assert main(["explain", str(text_run), "a great film", long_review, "--json",
                 "--out", str(tmp_path / "text")]) == 0
    record, _ = json.loads(capsys.readouterr().out)
    assert record["method"] == "ig" and len(record["tokens"]) == 3 and record["tokens"][0]["token"] == "a"

    image = tiny_samples["image"][0]
    (tmp_path / "a-file").write_text("")
    for args, message in [  # (the API's tests cover the other refusals)
        ((run, tmp_path / "missing.png", "--out", tmp_path / "bad"), "cannot read image"),
        ((export, image, "--out", tmp_path / "bad"), "not an export folder"),
        ((run, image, "--out", tmp_path / "a-file"), "is a file: name a folder"),
    ]:
        assert main(["explain", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()
