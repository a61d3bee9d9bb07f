"""The run directory is the only contract: `load_run` rebuilds everything from it, and `grove
evaluate` and `grove predict` agree on every input of every modality."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from conftest import only_run_dir, run_grove
from grove.rundir import SCHEMA_VERSION, load_run

pytestmark = pytest.mark.e2e


def recipe_file(tmp_path, model: dict, data: dict, epochs=2) -> str:
    recipe = {"model": model, "data": {"batch_size": 8, **data}, "optim": {"name": "adamw", "lr": 0.01},
              "train": {"epochs": epochs, "precision": "fp32"}, "run": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def image_data(root):
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 12), ("val", 4), ("test", 5)):
        for label, level in (("dark", 40), ("light", 210)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(level, 30, (12, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
                if split == "test":
                    files[folder / f"{i}.png"] = label
    return files


def audio_data(root):
    rng = np.random.default_rng(0)
    files = {}
    t = np.arange(8000) / 8000
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        for label, hz in (("low", 300), ("high", 1800)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                wave = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.05 * rng.standard_normal()) * t) + 0.02 * rng.standard_normal(8000)
                sf.write(folder / f"{i}.wav", wave.astype(np.float32), 8000)
                if split == "test":
                    files[folder / f"{i}.wav"] = label
    return files


def text_data(root):
    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "fine", "superb"], ["awful", "dull", "poor", "bad"]
    tests = {}
    root.mkdir()
    for split, n in (("train", 40), ("dev", 10), ("test", 8)):
        rows = ["text,label"]
        for i in range(n):
            label = i % 2
            words = rng.choice(good if label else bad, 3)
            text = f"the film was {' '.join(words)}"
            rows.append(f"{text},{label}")
            if split == "test":
                tests[text] = str(label)
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return tests


CASES = {
    "image": ({"name": "seed_cnn"}, lambda root: {"name": "image_folder", "root": str(root), "image_size": 12}, image_data),
    "audio": ({"name": "ds_cnn", "channels": 16}, lambda root: {"name": "audio_folder", "root": str(root),
                                                                 "sample_rate": 8000}, audio_data),
    "text": ({"name": "rnn_classifier", "n_embd": 16, "n_hidden": 16},
             lambda root: {"name": "text_classification", "root": str(root), "test": "test.csv"}, text_data),
}


@pytest.mark.parametrize("modality", list(CASES))
def test_evaluate_and_predict_agree(tmp_path, modality):
    model, data, make = CASES[modality]
    inputs = make(tmp_path / "data")  # test input -> true label
    result = run_grove("train", recipe_file(tmp_path, model, data(tmp_path / "data")))
    assert result.returncode == 0, result.stderr
    run = only_run_dir(tmp_path / "runs")

    evaluated = json.loads(run_grove("evaluate", run, "--json").stdout)
    predicted = json.loads(run_grove("predict", run, *inputs, "--json").stdout)
    classes = evaluated["classes"]
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for record, truth in zip(predicted, inputs.values()):
        confusion[classes.index(truth), classes.index(record["top"][0]["label"])] += 1
    assert evaluated["split"] == "test" and evaluated["count"] == len(inputs)
    assert confusion.tolist() == evaluated["confusion_matrix"]


def test_load_run_rebuilds_the_run_from_its_directory(tmp_path):
    model, data, make = CASES["image"]
    make(tmp_path / "data")
    assert run_grove("train", recipe_file(tmp_path, model, data(tmp_path / "data"), epochs=1)).returncode == 0
    run = only_run_dir(tmp_path / "runs")
    loaded = load_run(run, device="cpu")
    assert loaded.meta.schema_version == SCHEMA_VERSION and loaded.meta.task == "classification"
    assert loaded.classes == ["dark", "light"] and not loaded.model.training
    assert loaded.task.monitor == "accuracy" and loaded.recipe.model.name == "seed_cnn"
    batch = loaded.transform(torch_uint8((2, 3, 12, 12)), False)
    assert loaded.model(batch).shape == (2, 2)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("digits")
    assert run_grove("train", "digits-cnn", "train.max_steps=2", f"run.dir={base}").returncode == 0
    return only_run_dir(base)


@pytest.mark.parametrize("damage,message", [
    (lambda run: (run / "meta.json").write_text("{not json"), "meta.json cannot be read"),
    (lambda run: (run / "meta.json").write_text('{"recipe": "x"}'), "meta.json is damaged"),
    (lambda run: (run / "config.yaml").write_text("model: [unclosed"), "config.yaml cannot be read"),
    (lambda run: (run / "config.yaml").write_text("model:\n  name: no_such_model\ndata:\n  name: digits\n"),
     "config.yaml is damaged"),
    (lambda run: (run / "checkpoints" / "best").unlink(), "checkpoints/best is missing"),
    (lambda run: (run / "meta.json").unlink(), "meta.json is missing"),
    (lambda run: (run / "meta.json").write_text((run / "meta.json").read_text().replace('"0",', "")),
     "names 9 classes but the model has 10 outputs"),
])
def test_a_damaged_run_file_is_one_line_naming_it(digits_run, tmp_path, damage, message, capsys):
    from grove.cli import main

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, symlinks=True)
    damage(run)
    for args in (["evaluate", str(run)], ["predict", str(run), "x.png"]):  # in this process: only the message matters
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def torch_uint8(shape):
    import torch

    return torch.randint(0, 256, shape, dtype=torch.uint8)
