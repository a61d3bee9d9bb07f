"""`grove` as a user runs it: train, evaluate, predict, listings, and one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import only_run_dir, run_grove


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    result = run_grove("train", "digits-cnn", "train.epochs=3", f"run.dir={base}")
    assert result.returncode == 0, result.stderr
    assert "done: test accuracy" in result.stdout
    return only_run_dir(base)


def digit_png(path, value: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = digits.images[list(digits.target).index(value)] * 255 / 16
    Image.fromarray(image.round().astype(np.uint8)).save(path)
    return path


def test_evaluate_prints_accuracy_per_class_figures_and_confusion(digits_run):
    result = run_grove("evaluate", digits_run)
    assert result.returncode == 0, result.stderr
    assert "test: loss" in result.stdout and "accuracy 0.9" in result.stdout and "confusion matrix" in result.stdout
    as_json = json.loads(run_grove("evaluate", digits_run, "--split", "val", "--json").stdout)
    assert as_json["split"] == "val" and len(as_json["per_class"]["f1"]) == 10
    assert (digits_run / "eval_val.json").is_file() and (digits_run / "plots" / "confusion_val.png").is_file()


def test_predict_reads_image_files_and_ranks_labels(digits_run, tmp_path):
    files = [digit_png(tmp_path / f"{v}.png", v) for v in (3, 7)]
    result = run_grove("predict", digits_run, *files, "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [r["top"][0]["label"] for r in out] == ["3", "7"]
    assert len(out[0]["top"]) == 3 and out[0]["top"][0]["probability"] >= out[0]["top"][1]["probability"]


def test_python_api_predicts_from_paths_and_arrays(digits_run, tmp_path):
    import grove
    from sklearn.datasets import load_digits

    predictor = grove.load(digits_run)
    digits = load_digits()
    arrays = [(image * 255 / 16).round().astype(np.uint8) for image in digits.images[:40]]
    paths = []
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    by_array = [ranked[0][0] for ranked in predictor.predict(arrays)]
    by_path = [ranked[0][0] for ranked in predictor.predict(paths)]
    assert by_array == by_path
    assert sum(p == str(t) for p, t in zip(by_array, digits.target[:40])) >= 32


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_predict_on_a_corrupt_image_is_one_line(digits_run, tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    result = run_grove("predict", digits_run, bad)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read image") and str(bad) in result.stderr
    assert result.stderr.count("\n") == 1


def test_user_mistakes_are_one_line_and_leave_no_run_directory(tmp_path):
    for args, message in [
        (["train", "digits-cnn", "train.epoch=2"], "unknown recipe key 'train.epoch'"),
        (["train", "no-such-recipe"], "no recipe named"),
        (["train", "imagenet-resnet50"], "data.root is required"),
        (["train", "digits-cnn", "data.batch_size=100000"], "larger than the training split"),
        (["evaluate", tmp_path / "missing"], "does not exist"),
        (["train"], "name a recipe"),
    ]:
        where = [f"run.dir={tmp_path}"] if args[0] == "train" and len(args) > 1 else []
        result = run_grove(*args, *where)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*/*"))


def test_listings(tmp_path):
    recipes = run_grove("recipes").stdout
    assert "digits-cnn" in recipes and "offline default" in recipes
    models = run_grove("models").stdout
    assert "resnet50" in models and "25.56M" in models and "seed_cnn" in models
    assert "cifar10" in run_grove("datasets").stdout
