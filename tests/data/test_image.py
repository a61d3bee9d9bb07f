import hashlib
import shutil
import io
import json
import pickle
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from grove.data import image
from grove.data.image import ImageFiles, ImageTransform, cifar10, digits, image_folder, load_image
from grove.errors import GroveError


def save_image(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def noise(h, w, channels=3, seed=0):
    shape = (h, w, channels) if channels == 3 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# digits


def test_digits_splits_partition_the_data():
    from sklearn.datasets import load_digits

    bundle = digits(seed=1)
    splits = [bundle.train, bundle.val, bundle.test]
    assert [len(s) for s in splits] == [1293, 144, 360]

    def items(images, labels):  # a multiset, because a few digits images are exact duplicates
        return Counter((np.asarray(x, dtype=np.uint8).tobytes(), int(y)) for x, y in zip(images, labels))

    full = load_digits()
    expected = items(np.round(full.images * 255 / 16).astype(np.uint8), full.target)
    assert sum((items(s.inputs[:, 0].numpy(), s.targets) for s in splits), Counter()) == expected
    assert all(set(s.targets.tolist()) == set(range(10)) for s in splits)  # stratified


def test_digits_bundle_describes_itself():
    bundle = digits()
    x = bundle.train.inputs
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and int(x.max()) == 255
    assert bundle.classes == [str(d) for d in range(10)]
    assert bundle.model_defaults == {"num_classes": 10, "in_channels": 1, "image_size": 8}
    assert bundle.meta["image_size"] == bundle.meta["load_size"] == 8
    json.dumps(bundle.meta)
    assert torch.equal(digits().train.inputs, x)  # the seed fixes the split
    assert not torch.equal(digits(seed=5).train.inputs, x)


def test_digits_rejects_a_bad_fraction():
    with pytest.raises(GroveError, match="val_fraction"):
        digits(val_fraction=0)


# ImageTransform


def fitted(x, **options):
    pixels = x.float().div(255).transpose(0, 1).flatten(1)
    return ImageTransform(pixels.mean(1).tolist(), pixels.std(1).tolist(), **options)


def test_eval_is_deterministic_and_normalised():
    x = torch.from_numpy(noise(32, 32, seed=3)).permute(2, 0, 1).unsqueeze(0).repeat(4, 1, 1, 1)
    x[1] //= 2
    t = fitted(x, crop_padding=4, flip=True)
    out = t(x, train=False)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, t(x, train=False))
    per_channel = out.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 1e-4
    assert (per_channel.std(1) - 1).abs().max() < 1e-3


def test_train_crops_are_shifted_windows_that_differ_per_sample():
    torch.manual_seed(0)
    one = torch.from_numpy(noise(32, 32, seed=4)).permute(2, 0, 1)
    x = one.expand(64, -1, -1, -1)
    t = ImageTransform([0.5] * 3, [0.5] * 3, crop_padding=4)
    out = t(x, train=True)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(t(one[None], train=False), (4, 4, 4, 4))[0]
    windows = {(dy, dx) for dy in range(9) for dx in range(9) for o in out
               if torch.equal(o, padded[:, dy:dy + 32, dx:dx + 32])}
    assert len(windows) > 20  # 64 samples over 81 offsets: each a true window, many distinct


def test_flip_flips_about_half():
    torch.manual_seed(0)
    x = torch.from_numpy(noise(8, 8, seed=5)).permute(2, 0, 1).expand(1000, -1, -1, -1)
    t = ImageTransform([0.0] * 3, [1 / 255] * 3, flip=True)
    out = t(x, train=True)
    same = (out == x.float()).flatten(1).all(1)
    flipped = (out == x.flip(3).float()).flatten(1).all(1)
    assert bool((same ^ flipped).all())
    assert 400 < int(flipped.sum()) < 600


def test_crop_24_from_32_and_center_crop_at_eval():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    t = ImageTransform([0.5] * 3, [0.5] * 3, crop_size=24, crop_padding=0, flip=True)
    assert t(x, train=True).shape == (5, 3, 24, 24)
    assert torch.equal(t(x, train=False), ImageTransform([0.5] * 3, [0.5] * 3)(x, train=False)[:, :, 4:28, 4:28])


def test_batch_of_one_and_global_rng_replay():
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    t = ImageTransform([0.5] * 3, [0.5] * 3, crop_size=24, crop_padding=4, flip=True)
    torch.manual_seed(7)
    first = t(x, train=True)
    torch.manual_seed(7)
    assert torch.equal(first, t(x, train=True))
    assert first.shape == (1, 3, 24, 24) and t(x, train=False).shape == (1, 3, 24, 24)


def test_crop_larger_than_the_images_is_an_error():
    t = ImageTransform([0.5], [0.5], crop_size=40, crop_padding=8)
    with pytest.raises(GroveError, match="crop_size 40"):
        t(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), train=True)


def test_transform_round_trips_through_json():
    t = ImageTransform([0.1, 0.2, 0.3], [0.4, 0.5, 0.6], crop_size=24, crop_padding=4, flip=True)
    t(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), train=False)  # fills the per-device cache
    d = json.loads(json.dumps(t.to_dict()))
    assert d == {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "crop_size": 24, "crop_padding": 4, "flip": True}
    assert ImageTransform.from_dict(d) == t


# load_image


def test_load_png_resizes_the_shorter_side_and_center_crops(tmp_path):
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :20, 0] = pixels[:, 20:40, 1] = pixels[:, 40:, 2] = 255  # red | green | blue thirds
    path = save_image(tmp_path / "wide.png", pixels)
    exact = load_image(path, 20, 3)
    assert exact.dtype == torch.uint8 and exact.shape == (3, 20, 20)
    assert (exact[1] == 255).all() and (exact[0] == 0).all() and (exact[2] == 0).all()
    halved = load_image(path, 10, 3)[:, :, 2:8]  # bilinear blurs the edges of the green third
    assert halved.shape == (3, 10, 6) and (halved[1] == 255).all() and (halved[0] == 0).all()


def test_load_jpeg_grayscale_and_rgb(tmp_path):
    rgb = save_image(tmp_path / "photo.JPG", noise(30, 40, seed=6))
    gray = save_image(tmp_path / "gray.jpeg", noise(40, 30, channels=1, seed=7))
    assert load_image(rgb, 16, 3).shape == (3, 16, 16)
    assert load_image(rgb, 16, 1).shape == (1, 16, 16)
    as_rgb = load_image(gray, 16, 3)
    assert as_rgb.shape == (3, 16, 16) and torch.equal(as_rgb[0], as_rgb[2])


def test_large_jpeg_decodes_to_the_requested_size(tmp_path):
    path = save_image(tmp_path / "big.jpg", np.full((600, 900, 3), 128, dtype=np.uint8))
    out = load_image(path, 64, 3)
    assert out.shape == (3, 64, 64) and (out.int() - 128).abs().max() <= 2


def png_bytes():
    buffer = io.BytesIO()
    Image.fromarray(noise(64, 64, seed=8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content",
    [
        ("random.png", np.random.default_rng(0).bytes(500)),
        ("empty.jpg", b""),
        ("truncated.png", png_bytes()[:2000]),
        ("missing.png", None),
    ],
    ids=["random-bytes", "empty", "truncated", "missing"],
)
def test_unreadable_images_are_one_line_grove_errors(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GroveError) as err:
        load_image(path, 8, 3)
    message = str(err.value)
    assert message.startswith(f"cannot read image {path}: ") and "\n" not in message


# ImageFiles and image_folder (the layouts and their errors: test_folders.py)


def make_tree(root, layout, size=12):
    """layout: {class: number of images}; files alternate .png and .JPG."""
    for k, (name, count) in enumerate(layout.items()):
        for i in range(count):
            save_image(root / name / f"{i:02d}{'.png' if i % 2 else '.JPG'}", noise(size, size + 4, seed=k * 10 + i))


def test_image_files_decode_and_name_unreadable_files(tmp_path):
    good = save_image(tmp_path / "a.png", noise(12, 16))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    data = ImageFiles([(str(good), 0), (str(bad), 1)], 10, 3)
    assert len(data) == 2 and [data.path(i) for i in range(2)] == [str(good), str(bad)]
    image, label = data[0]
    assert image.shape == (3, 10, 10) and image.dtype == torch.uint8 and label == 0
    assert data[1] is None
    copy = pickle.loads(pickle.dumps(data))
    assert torch.equal(copy[0][0], image)


def test_image_folder_builds_train_and_val(tmp_path):
    make_tree(tmp_path / "train", {"a": 2, "b": 2, "c": 1}, size=24)
    make_tree(tmp_path / "val", {"a": 1, "b": 1, "c": 1}, size=24)
    bundle = image_folder(root=str(tmp_path), image_size=16, load_size=20, crop_padding=2)
    assert bundle.classes == ["a", "b", "c"] and bundle.test is None
    assert [bundle.val[i][1] for i in range(3)] == [0, 1, 2]
    assert bundle.model_defaults == {"num_classes": 3, "in_channels": 3, "image_size": 16}
    assert (bundle.meta["image_size"], bundle.meta["load_size"]) == (16, 20)
    assert bundle.meta["modality"] == "image" and bundle.meta["layout"] == "split_folders"
    batch = torch.stack([bundle.train[i][0] for i in range(len(bundle.train))])
    assert batch.shape == (5, 3, 20, 20)
    assert bundle.transform(batch, train=True).shape == bundle.transform(batch, train=False).shape == (5, 3, 16, 16)
    assert ImageTransform.from_dict(bundle.meta["transform"]) == bundle.transform


def test_image_folder_defaults(tmp_path):
    make_tree(tmp_path / "train", {"a": 1, "b": 1})
    make_tree(tmp_path / "val", {"a": 1, "b": 1})
    make_tree(tmp_path / "test", {"a": 1, "b": 1})
    big = image_folder(root=str(tmp_path))
    assert (big.meta["image_size"], big.meta["load_size"]) == (224, 256) and len(big.test) == 2
    gray = image_folder(root=str(tmp_path), image_size=32, channels=1)
    assert gray.meta["load_size"] == 32 and gray.transform.mean == [0.5]
    assert gray.train[0][0].shape == (1, 32, 32)


@pytest.mark.parametrize(
    "setup, options, match",
    [
        (lambda root: None, {"root": None}, "data.root is required for image_folder"),
        (lambda root: make_tree(root, {"a": 2, "b": 2}), {"num_classes": 1000}, "num_classes"),
        (lambda root: None, {"channels": 2}, "channels"),
        (lambda root: None, {"image_size": 64, "load_size": 32}, "load_size"),
    ],
)
def test_image_folder_option_errors(tmp_path, setup, options, match):
    root = tmp_path / "images"
    setup(root)
    with pytest.raises(GroveError, match=match):
        image_folder(**{"root": str(root), **options})


# cifar10


def fake_cifar(folder, byte_keys=True, per_batch=4, test_size=6):
    """The CIFAR-10 python archive's layout with tiny batches; labels count up modulo 10."""
    key = (lambda k: k.encode()) if byte_keys else (lambda k: k)
    rng = np.random.default_rng(0)
    batches, start = {}, 0
    for name, n in [*((f"data_batch_{k}", per_batch) for k in range(1, 6)), ("test_batch", test_size)]:
        labels = [(start + i) % 10 for i in range(n)]
        batches[name] = {key("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8), key("labels"): labels}
        start += n
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches["batches.meta"] = {key("label_names"): [key(n) for n in names]}
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in batches.items():
            data = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive, batches, names


@pytest.mark.parametrize("byte_keys", [True, False])
def test_cifar10_reads_the_archive(tmp_path, monkeypatch, byte_keys):
    archive, batches, names = fake_cifar(tmp_path, byte_keys)
    monkeypatch.setattr(image, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    bundle = cifar10(root=str(tmp_path))
    key = b"data" if byte_keys else "data"
    assert bundle.classes == names
    assert bundle.train.inputs.shape == (20, 3, 32, 32) and bundle.train.inputs.dtype == torch.uint8
    assert bundle.train.targets.tolist() == [i % 10 for i in range(20)]
    assert torch.equal(bundle.train.inputs[4].flatten(), torch.from_numpy(batches["data_batch_2"][key][0]))
    assert bundle.val is bundle.test and len(bundle.test) == 6
    assert bundle.model_defaults == {"num_classes": 10, "in_channels": 3, "image_size": 32}


def test_cifar10_val_fraction_and_crop(tmp_path, monkeypatch):
    archive, _, _ = fake_cifar(tmp_path)
    monkeypatch.setattr(image, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    bundle = cifar10(root=str(tmp_path), val_fraction=0.5, crop_size=24)
    assert len(bundle.train) == len(bundle.val) == 10
    assert sorted(bundle.val.targets.tolist()) == list(range(10))
    assert bundle.meta["image_size"] == 24 and bundle.meta["load_size"] == 32
    assert bundle.transform(bundle.train.inputs, train=True).shape == (10, 3, 24, 24)


def test_cifar10_offline_message(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setenv("GROVE_DATA_DIR", str(tmp_path))
    with pytest.raises(GroveError, match="could not be downloaded") as err:
        cifar10()
    assert str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in str(err.value)


def test_cifar10_rejects_a_wrong_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not it")
    with pytest.raises(GroveError, match="delete it"):
        cifar10(root=str(tmp_path))


# One split, as `grove evaluate` rebuilds it: splits and classes


def same_tensor_items(a, b):
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_digits_one_split_and_classes():
    full = digits(seed=1)
    test = digits(seed=1, splits=["test"])
    assert test.train is None and test.val is None and test.meta == full.meta and test.classes == full.classes
    same_tensor_items(test.test, full.test)
    same_tensor_items(digits(seed=1, splits=["val"]).val, full.val)
    order = [str(d) for d in reversed(range(10))] + ["ten"]  # a class with no image is fine
    relabelled = digits(seed=1, splits=["test"], classes=order)
    assert relabelled.classes == order and relabelled.model_defaults["num_classes"] == 11
    assert torch.equal(relabelled.test.targets, 9 - full.test.targets)
    with pytest.raises(GroveError) as err:
        digits(seed=1, splits=["test"], classes=[str(d) for d in range(9)])  # no "9"
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown label '9' in digits test #")
    assert message.endswith("known classes: '0', '1', '2', '3', '4', '5', '6', '7', '8'")


def test_cifar10_one_split_unpickles_only_its_batches(tmp_path, monkeypatch):
    archive, _, names = fake_cifar(tmp_path)
    monkeypatch.setattr(image, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    full = cifar10(root=str(tmp_path), val_fraction=0.5)
    unpickled = []
    real = image._unpickle
    monkeypatch.setattr(image, "_unpickle", lambda f: unpickled.append(real(f)) or unpickled[-1])
    test = cifar10(root=str(tmp_path), val_fraction=0.5, splits=["test"])
    assert len(unpickled) == 2  # batches.meta and test_batch, not the five training batches
    assert test.train is None and test.val is None and test.meta == full.meta
    same_tensor_items(test.test, full.test)
    val = cifar10(root=str(tmp_path), val_fraction=0.5, splits=["val"], classes=names[::-1])
    assert val.train is None and val.test is None and val.classes == names[::-1]
    assert torch.equal(val.val.inputs, full.val.inputs) and torch.equal(val.val.targets, 9 - full.val.targets)


def image_items(split):
    return [(split.path(i), split.targets[i]) for i in range(len(split))]


def test_image_folder_builds_only_the_asked_splits(tmp_path):
    for name, count in (("train", 3), ("val", 1), ("test", 2)):
        make_tree(tmp_path / name, {"a": count, "b": count, "c": count})
    full = image_folder(root=str(tmp_path), image_size=8)
    test = image_folder(root=str(tmp_path), image_size=8, splits=["test"])
    assert test.train is None and test.val is None and test.classes == full.classes and test.meta == full.meta
    assert image_items(test.test) == image_items(full.test)
    assert torch.equal(test.test[1][0], full.test[1][0])
    # With the run's classes, train/ is not needed at all.
    shutil.rmtree(tmp_path / "train")
    alone = image_folder(root=str(tmp_path), image_size=8, splits=["test"], classes=full.classes)
    assert image_items(alone.test) == image_items(full.test) and alone.meta == full.meta


def test_image_folder_held_out_splits_match_and_classes_relabel(tmp_path):
    make_tree(tmp_path, {"cat": 7, "dog": 5, "owl": 3})
    full = image_folder(root=str(tmp_path), image_size=8, val_fraction=0.2, test_fraction=0.2)
    for split in ("val", "test"):
        one = image_folder(root=str(tmp_path), image_size=8, val_fraction=0.2, test_fraction=0.2, splits=[split])
        assert image_items(getattr(one, split)) == image_items(getattr(full, split))
        assert [s for s in ("train", "val", "test") if getattr(one, s) is not None] == [split]
    order = ["owl", "dog", "cat", "emu"]
    relabelled = image_folder(
        root=str(tmp_path), image_size=8, val_fraction=0.2, test_fraction=0.2, splits=["test"], classes=order
    )
    assert relabelled.classes == order and relabelled.model_defaults["num_classes"] == 4
    assert [(path, order.index(full.classes[t])) for path, t in image_items(full.test)] == image_items(relabelled.test)


def test_image_folder_unknown_class_is_one_line_naming_file_and_classes(tmp_path):
    for name in ("train", "val", "test"):
        make_tree(tmp_path / name, {"a": 1, "b": 1})
    make_tree(tmp_path / "test" / "zebra", {"x": 0})
    save_image(tmp_path / "test" / "zebra" / "z.png", noise(12, 12))
    # test/ lacking a class of the run is fine; a class the run does not know is not.
    fine = image_folder(root=str(tmp_path), image_size=8, splits=["val"], classes=["a", "b", "c"])
    assert len(fine.val) == 2
    with pytest.raises(GroveError) as err:
        image_folder(root=str(tmp_path), image_size=8, splits=["test"], classes=["a", "b"])
    assert str(err.value) == (
        f"unknown label 'zebra' in {tmp_path / 'test' / 'zebra' / 'z.png'}; known classes: 'a', 'b'"
    )
