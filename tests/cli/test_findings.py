"""Each finding of trying grove as a new user, kept from coming back."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import only_run_dir, run_grove

pytestmark = pytest.mark.e2e


def write_image_folder(root, per_class=6):
    """root/{train,val,test}/<digit>/*.png from the bundled digits, one colour class per digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = {}
    for image, label in zip(digits.images, digits.target):
        if label > 2:
            continue
        n = count.get(label, 0)
        if n >= per_class * 3:
            continue
        count[label] = n + 1
        split = ("train", "val", "test")[n % 3] if n >= 3 else ("train", "val", "test")[n]
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).round().astype(np.uint8)).resize((16, 16)).save(folder / f"{n}.png")
    return root


def test_overrides_may_follow_options(tmp_path):
    result = run_grove("train", "digits-cnn", "--nproc", "1", "train.max_steps=3", f"run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert json.loads((only_run_dir(tmp_path) / "summary.json").read_text())["steps"] == 3


def test_a_wrong_option_type_is_one_line_before_any_data_is_read(tmp_path):
    result = run_grove("train", "digits-cnn", "data.val_fraction=lots", f"run.dir={tmp_path}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "data.val_fraction" in result.stderr and "'lots'" in result.stderr
    assert not tmp_path.joinpath("digits-cnn").exists()


def test_a_misspelt_section_in_a_recipe_file_gets_a_did_you_mean(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("modle:\n  name: seed_cnn\ndata:\n  name: digits\n")
    result = run_grove("train", recipe)
    assert result.returncode == 2 and "unknown recipe key 'modle' (did you mean 'model'?)" in result.stderr


def test_evaluate_on_a_missing_gpu_names_the_option(tmp_path):
    assert run_grove("train", "digits-cnn", "train.max_steps=2", f"run.dir={tmp_path}").returncode == 0
    result = run_grove("evaluate", only_run_dir(tmp_path), "--device", "cuda")
    if result.returncode == 0:
        pytest.skip("a CUDA GPU is visible")
    assert result.returncode == 2 and "--device=cuda" in result.stderr and "train.device" not in result.stderr


def test_resume_before_the_first_checkpoint_says_it_starts_over(tmp_path):
    assert run_grove("train", "digits-cnn", "train.max_steps=2", f"run.dir={tmp_path}").returncode == 0
    run = only_run_dir(tmp_path)
    for path in sorted((run / "checkpoints").iterdir(), reverse=True):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    result = run_grove("train", "--resume", run)
    assert result.returncode == 0, result.stderr
    assert "has no checkpoint yet" in result.stdout and "starts over" in result.stdout


def test_a_strict_run_that_fails_leaves_no_run_directory(tmp_path):
    data = write_image_folder(tmp_path / "images", per_class=1)  # 3 training images and the broken one: one batch
    (data / "train" / "0" / "broken.png").write_bytes(b"not an image")
    args = ["train", "digits-cnn", "data.name=image_folder", f"data.root={data}", "data.image_size=16",
            "data.strict=true", "data.batch_size=4", f"run.dir={tmp_path / 'runs'}"]
    result = run_grove(*args)
    assert result.returncode == 2 and "broken.png" in result.stderr and result.stderr.count("\n") == 1
    assert not list((tmp_path / "runs").glob("*/*"))


def test_skipped_files_are_listed_in_the_run_and_counted(tmp_path):
    data = write_image_folder(tmp_path / "images")
    (data / "train" / "1" / "broken.png").write_bytes(b"not an image")
    (data / "test" / "2" / "empty.png").write_bytes(b"")
    # batch_size 1: no partial batch is dropped, so the epoch reads every training file
    result = run_grove("train", "digits-cnn", "data.name=image_folder", f"data.root={data}", "data.image_size=16",
                       "data.batch_size=1", "train.epochs=1", f"run.dir={tmp_path / 'runs'}")
    assert result.returncode == 0, result.stderr
    run = only_run_dir(tmp_path / "runs")
    listed = (run / "skipped_files.txt").read_text().splitlines()
    assert listed == sorted(listed) and sorted(p.rsplit("/", 1)[-1] for p in listed) == ["broken.png", "empty.png"]
    assert json.loads((run / "summary.json").read_text())["skipped_files"] == 2
    evaluated = json.loads(run_grove("evaluate", run, "--json").stdout)
    assert evaluated["skipped_files"] == 1  # the test split's own


def test_one_unreadable_input_does_not_stop_the_others(tmp_path):
    data = write_image_folder(tmp_path / "images")
    assert run_grove("train", "digits-cnn", "data.name=image_folder", f"data.root={data}", "data.image_size=16",
                     "data.batch_size=4", "train.max_steps=2", f"run.dir={tmp_path / 'runs'}").returncode == 0
    run = only_run_dir(tmp_path / "runs")
    good = next((data / "test" / "1").iterdir())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    result = run_grove("predict", run, good, bad, good)
    assert result.returncode == 2
    assert result.stdout.count(f"{good}:") == 2 and "bad.png" in result.stderr and "1 of 3 inputs" in result.stderr
    as_json = json.loads(run_grove("predict", run, good, bad, "--json").stdout)
    assert "top" in as_json[0] and "error" in as_json[1]


def test_help_does_not_import_torch():
    code = "import sys; from grove.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_resuming_on_another_process_count_is_one_clear_error(tmp_path):
    assert run_grove("train", "digits-cnn", "train.max_steps=2", f"run.dir={tmp_path}").returncode == 0
    result = run_grove("train", "--resume", only_run_dir(tmp_path), "--nproc", "2")
    assert result.returncode != 0 and "resume it with --nproc 1" in result.stderr
    assert "Traceback" not in result.stderr.split("resume it with")[0].splitlines()[-1]


@pytest.mark.parametrize("args", [["predict", "RUN", "x.png", "--top-k", "0"], ["predict", "RUN", "x.png", "--top-k", "-1"],
                                  ["generate", "RUN", "--max-new-tokens", "-3"], ["train", "digits-cnn", "--nproc", "0"]])
def test_counts_below_one_are_refused(args):
    result = run_grove(*args)
    assert result.returncode == 2 and "must be at least 1" in result.stderr and "Traceback" not in result.stderr


def test_a_directory_as_recipe_says_so(tmp_path):
    result = run_grove("train", tmp_path)
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_version_and_a_closed_pipe():
    assert run_grove("--version").stdout.startswith("grove ")
    piped = subprocess.run(f"{sys.executable} -m grove recipes | head -1", shell=True, capture_output=True, text=True)
    assert piped.stdout.count("\n") == 1 and piped.stderr == ""
