"""The two class-folder layouts image_folder and audio_folder share, and every layout error."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grove.data.audio import audio_folder
from grove.data.folders import scan_folders
from grove.data.image import image_folder
from grove.errors import GroveError

sf = pytest.importorskip("soundfile")


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def write_wav(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 16000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * (200 + 10 * seed) * t)).astype(np.float32), 16000)


BUILDERS = {
    "image": (lambda **kw: image_folder(image_size=8, **kw), write_png, ".png"),
    "audio": (lambda **kw: audio_folder(clip_seconds=0.1, **kw), write_wav, ".wav"),
}


@pytest.fixture(params=sorted(BUILDERS))
def kind(request):
    return request.param


def build(kind, root, **options):
    return BUILDERS[kind][0](root=str(root), **options)


def make(kind, folder: Path, counts: dict[str, int], start: int = 0) -> None:
    """counts: {class: files}, named <class>/f<k>.<ext>."""
    _, write, ext = BUILDERS[kind]
    for c, (name, n) in enumerate(counts.items()):
        for k in range(n):
            write(folder / name / f"f{start + k:03d}{ext}", seed=c * 100 + k)


def names(split, root: Path) -> list[str]:
    return sorted(Path(split.path(i)).relative_to(root).as_posix() for i in range(len(split)))


def labels(split) -> Counter:
    return Counter(split.targets)


# ---------------------------------------------------------------------------------------------
# Layout (a): root/{train,val,test}/<class>/<file>


def test_split_folders_are_used_as_they_are(kind, tmp_path):
    make(kind, tmp_path / "train", {"cat": 3, "dog": 2})
    make(kind, tmp_path / "val", {"cat": 1, "dog": 1})
    make(kind, tmp_path / "test", {"cat": 2, "dog": 1})
    bundle = build(kind, tmp_path)
    assert bundle.classes == ["cat", "dog"] and bundle.meta["layout"] == "split_folders"
    assert names(bundle.val, tmp_path) == ["val/cat/f000" + BUILDERS[kind][2], "val/dog/f000" + BUILDERS[kind][2]]
    assert len(bundle.train) == 5 and len(bundle.test) == 3
    assert labels(bundle.test) == {0: 2, 1: 1}
    assert bundle.meta["modality"] == kind


def test_without_val_a_seeded_stratified_share_of_train_is_held_out(kind, tmp_path):
    make(kind, tmp_path / "train", {"cat": 10, "dog": 20})
    bundle = build(kind, tmp_path, val_fraction=0.2, seed=1)
    assert labels(bundle.val) == {0: 2, 1: 4} and labels(bundle.train) == {0: 8, 1: 16}
    assert bundle.test is None
    assert all(p.startswith("train/") for p in names(bundle.val, tmp_path))
    assert not set(names(bundle.val, tmp_path)) & set(names(bundle.train, tmp_path))
    again = build(kind, tmp_path, val_fraction=0.2, seed=1)
    assert names(again.val, tmp_path) == names(bundle.val, tmp_path)
    other = build(kind, tmp_path, val_fraction=0.2, seed=2)
    assert names(other.val, tmp_path) != names(bundle.val, tmp_path)


def test_without_val_and_no_fraction_says_what_to_add(kind, tmp_path):
    make(kind, tmp_path / "train", {"cat": 2, "dog": 2})
    with pytest.raises(GroveError, match="no val/ folder and val_fraction is 0"):
        build(kind, tmp_path, val_fraction=0.0)


# ---------------------------------------------------------------------------------------------
# Layout (b): root/<class>/<file>


def test_class_folders_are_split_by_fractions_stratified_and_seeded(kind, tmp_path):
    make(kind, tmp_path, {"a": 10, "b": 10, "c": 20})
    bundle = build(kind, tmp_path, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert bundle.classes == ["a", "b", "c"] and bundle.meta["layout"] == "class_folders"
    assert labels(bundle.test) == {0: 2, 1: 2, 2: 4} and labels(bundle.val) == {0: 1, 1: 1, 2: 2}
    assert len(bundle.train) == 40 - 8 - 4
    everything = names(bundle.train, tmp_path) + names(bundle.val, tmp_path) + names(bundle.test, tmp_path)
    assert len(set(everything)) == 40
    assert names(build(kind, tmp_path, val_fraction=0.1, test_fraction=0.2, seed=0).test, tmp_path) == names(
        bundle.test, tmp_path
    )


def test_class_folders_honour_the_split_lists(kind, tmp_path):
    ext = BUILDERS[kind][2]
    make(kind, tmp_path, {"a": 4, "b": 4})
    (tmp_path / "validation_list.txt").write_text(f"a/f000{ext}\nb/f001{ext}\n")
    (tmp_path / "testing_list.txt").write_text(f"\nb/f003{ext}\n")
    bundle = build(kind, tmp_path)
    assert names(bundle.val, tmp_path) == [f"a/f000{ext}", f"b/f001{ext}"]
    assert names(bundle.test, tmp_path) == [f"b/f003{ext}"]
    assert len(bundle.train) == 5


def test_only_a_test_list_still_holds_out_val_by_fraction(kind, tmp_path):
    ext = BUILDERS[kind][2]
    make(kind, tmp_path, {"a": 10, "b": 10})
    (tmp_path / "testing_list.txt").write_text(f"a/f009{ext}\n")
    bundle = build(kind, tmp_path, val_fraction=0.2, test_fraction=0.3)
    assert names(bundle.test, tmp_path) == [f"a/f009{ext}"] and labels(bundle.val) == {0: 2, 1: 2}


def test_hidden_files_and_folders_and_other_extensions_are_skipped(kind, tmp_path):
    ext = BUILDERS[kind][2]
    make(kind, tmp_path, {"a": 3, "b": 3})
    BUILDERS[kind][1](tmp_path / ".cache" / "x" / f"f{ext}", seed=0)
    BUILDERS[kind][1](tmp_path / "a" / f"._f000{ext}", seed=0)  # a macOS resource fork
    (tmp_path / "a" / "notes.txt").write_text("not data")
    BUILDERS[kind][1](tmp_path / "b" / "deeper" / f"g{ext}", seed=1)
    splits = scan_folders(tmp_path, (ext,), what="files", val_fraction=0.2, test_fraction=0.0, seed=0)
    everything = sorted(Path(f).relative_to(tmp_path).as_posix() for f, _ in splits.train + splits.val)
    expected = [f"a/f00{k}{ext}" for k in range(3)] + [f"b/deeper/g{ext}"] + [f"b/f00{k}{ext}" for k in range(3)]
    assert everything == expected


def test_a_speakers_clips_share_a_split(tmp_path):
    for word in ("yes", "no"):
        for s in range(20):
            write_wav(tmp_path / word / f"spk{s:02d}_nohash_0.wav", seed=s)
    bundle = audio_folder(root=str(tmp_path), clip_seconds=0.1, val_fraction=0.2, test_fraction=0.2)
    speakers = [
        {Path(split.path(i)).name.split("_")[0] for i in range(len(split))}
        for split in (bundle.train, bundle.val, bundle.test)
    ]
    assert all(speakers) and not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])


def test_every_class_keeps_a_training_file(tmp_path):
    for name, n in (("a", 1), ("b", 2), ("c", 30)):
        for k in range(n):
            write_png(tmp_path / name / f"{k}.png", k)
    splits = scan_folders(tmp_path, (".png",), what="images", val_fraction=0.3, test_fraction=0.3, seed=0)
    assert {label for _, label in splits.train} == {0, 1, 2}
    assert len(splits.val) == 10 and len(splits.test) == 10  # ceil(33 * 0.3) each


# ---------------------------------------------------------------------------------------------
# Layouts that look wrong


def files_directly_in_a_split_folder(kind, root):
    make(kind, root, {"train": 2})  # root/train/f000.ext: "train" taken for a class


def split_folder_inside_a_split_folder(kind, root):
    make(kind, root / "train", {"train": 2, "val": 2})


def mixture(kind, root):
    make(kind, root, {"train": 2, "cat": 2, "dog": 2})


def empty_class_folder(kind, root):
    make(kind, root, {"cat": 2, "dog": 2})
    (root / "bird").mkdir()
    (root / "bird" / "readme.txt").write_text("no data here")


def one_class(kind, root):
    make(kind, root, {"cat": 3})


def different_class_sets(kind, root):
    make(kind, root / "train", {"cat": 2, "dog": 2})
    make(kind, root / "val", {"cat": 1, "fox": 1})


def val_lacks_a_class(kind, root):
    make(kind, root / "train", {"cat": 2, "dog": 2})
    make(kind, root / "val", {"cat": 1})


def no_files_at_all(kind, root):
    root.mkdir(parents=True)


def loose_files_only(kind, root):
    BUILDERS[kind][1](root / f"x{BUILDERS[kind][2]}", seed=0)


def val_and_test_but_no_train(kind, root):
    make(kind, root / "val", {"cat": 1, "dog": 1})


def list_matching_nothing(kind, root):
    make(kind, root, {"cat": 2, "dog": 2})
    (root / "validation_list.txt").write_text("elsewhere/cat/f000.wav\n")


def not_a_folder(kind, root):
    pass


@pytest.mark.parametrize(
    "setup, message",
    [
        (
            files_directly_in_a_split_folder,
            r"train holds .* directly, not in class folders: expected .*train/<class>/<file>; "
            "a class cannot be named train",
        ),
        (
            split_folder_inside_a_split_folder,
            r"train/train is a split folder inside .*train: expected .*; a class cannot be named train, val or test",
        ),
        (mixture, r"mixes split folders \(train/\) with other folders \(cat/, dog/\).*not both"),
        (empty_class_folder, r"class folder .*bird has no .* put each class's files in"),
        (one_class, r"has one class folder \(cat/\): classification needs at least two classes"),
        (different_class_sets, r"val and .*train have different class folders \(val/ lacks dog\)"),
        (val_lacks_a_class, r"val/ lacks dog\): every split needs a folder for each class"),
        (no_files_at_all, r"no .* in .*: expected .*/<class>/<file> or .*/\{train,val,test\}/<class>/<file>"),
        (loose_files_only, r"holds .* directly, not in class folders"),
        (val_and_test_but_no_train, r"has val/ but no train/: expected .*/train/<class>/<file>"),
        (list_matching_nothing, r"validation_list.txt lists 1 files and none of them is under"),
        (not_a_folder, r"is not a folder: expected"),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_wrong_layouts_are_one_line_errors_saying_what_was_expected(kind, tmp_path, setup, message):
    root = tmp_path / "data"
    setup(kind, root)
    with pytest.raises(GroveError, match=message) as err:
        build(kind, root)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be below 1"),
        ({"val_fraction": 0.0, "test_fraction": 0.0}, "the val split .* is empty"),
    ],
)
def test_fractions_are_checked(kind, tmp_path, options, message):
    make(kind, tmp_path, {"a": 3, "b": 3})
    with pytest.raises(GroveError, match=message):
        build(kind, tmp_path, **options)
