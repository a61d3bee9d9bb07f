"""Image data sets: every split holds uint8 (C, H, W) images.

Conversion to float, normalisation and augmentation happen in `ImageTransform` on whole batches on
the training device, so workers and host memory only ever move uint8 and the GPU does the rest.
Files are decoded by grove.runtime.inputs, which the torch-free runtime shares.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from grove.data.base import SPLITS, DataBundle, Split, TensorData, class_index, relabel, wanted_splits
from grove.data.download import data_dir, fetch
from grove.data.folders import scan_folders
from grove.errors import GroveError
from grove.registry import register_dataset
from grove.runtime import inputs

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


@dataclass
class ImageTransform:
    """uint8 (B, C, H, W) batch -> normalised float batch; random crop and flip when training.

    Randomness comes from the global torch RNG of the batch's device, which the engine checkpoints,
    so a resumed run draws the same crops and flips as an uninterrupted one.
    """

    mean: list[float]
    std: list[float]
    crop_size: int | None = None  # output side; None keeps the input size
    crop_padding: int = 0
    flip: bool = False
    # (scale, shift) per device, so each batch does not copy the constants to the GPU again.
    _affine: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        scale, shift = self._constants(x.device)
        x = torch.addcmul(shift, x.float(), scale)  # (x / 255 - mean) / std in one pass
        height, width = x.shape[-2:]
        size = self.crop_size
        if size is not None and (size > height or size > width):
            raise GroveError(f"crop_size {size} is larger than the {height}x{width} images")
        if train:
            return self._random_crop_flip(x, size or height, size or width)
        if size is None:
            return x
        top, left = (height - size) // 2, (width - size) // 2
        return x[:, :, top : top + size, left : left + size]

    def _random_crop_flip(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        pad = self.crop_padding
        if not pad and not self.flip and (height, width) == tuple(x.shape[-2:]):
            return x
        # Padding after normalisation fills with 0 = the mean colour, so borders carry no signal.
        x = F.pad(x, (pad, pad, pad, pad))
        batch, _, padded_h, padded_w = x.shape
        device = x.device
        top = torch.randint(0, padded_h - height + 1, (batch, 1), device=device)
        left = torch.randint(0, padded_w - width + 1, (batch, 1), device=device)
        rows = top + torch.arange(height, device=device)  # (B, h)
        cols = left + torch.arange(width, device=device)  # (B, w)
        if self.flip:
            # Reading a window's columns right to left crops and flips in the same gather.
            flipped = torch.rand(batch, 1, device=device) < 0.5
            cols = torch.where(flipped, cols.flip(1), cols)
        samples = torch.arange(batch, device=device)[:, None, None]
        # Three index tensors broadcast to (B, h, w) pick each sample's own window at once.
        return x.permute(0, 2, 3, 1)[samples, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._affine or torch.compiler.is_exporting():
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
            affine = ((1 / (255 * std)).to(device), (-mean / std).to(device))
            if torch.compiler.is_exporting():  # the tracer's tensors must not stay in the cache
                return affine
            self._affine[device] = affine
        return self._affine[device]

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageTransform":
        return cls(**d)


def load_image(path, size: int, channels: int) -> torch.Tensor:
    """uint8 (channels, size, size) from an image file; one-line GroveError if it cannot be read."""
    return torch.from_numpy(inputs.load_image(path, size, channels))


def image_to_tensor(im: Image.Image, size: int, channels: int) -> torch.Tensor:
    """Shorter side resized to `size` (bilinear), then center-cropped: uint8 (channels, size, size)."""
    return torch.from_numpy(inputs.image_to_array(im, size, channels))


class ImageFiles:
    """Labelled image files as (uint8 (C, size, size), class index); None for an unreadable file."""

    def __init__(self, entries: list[tuple[str, int]], size: int, channels: int):
        self.files = [f for f, _ in entries]
        self.targets = [label for _, label in entries]
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return load_image(self.files[i], self.size, self.channels), self.targets[i]
        except GroveError:
            return None

    def path(self, i: int) -> str:
        return self.files[i]


def _image_bundle(train, val, test, classes, transform, channels, load_size, **meta) -> DataBundle:
    image_size = transform.crop_size or load_size
    return DataBundle(
        train=train,
        val=val,
        test=test,
        classes=classes,
        transform=transform,
        meta={
            "modality": "image",
            "channels": channels,
            "image_size": image_size,
            "load_size": load_size,
            "transform": transform.to_dict(),
            **meta,
        },
        model_defaults={"num_classes": len(classes), "in_channels": channels, "image_size": image_size},
    )


def _stratified_split(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int, name: str):
    """(kept, held out) index arrays, with `fraction` of `indices` held out in every class's proportion."""
    # Imported here: scikit-learn takes about a second to import and only these builders need it.
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise GroveError(f"{name} must be between 0 and 1, got {fraction}")
    try:
        return train_test_split(indices, test_size=fraction, stratify=labels[indices], random_state=seed)
    except ValueError as e:
        raise GroveError(f"cannot split {name}={fraction}: {e}") from None


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    pixels = images.float().div(255).transpose(0, 1).flatten(1)  # (C, N*H*W)
    return pixels.mean(1).tolist(), pixels.std(1).tolist()


def _labelled(data: TensorData, names: list[str], classes: list[str] | None) -> TensorData:
    return data if classes is None else relabel(data, names, classes)


@register_dataset(modality="image")
def digits(
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    crop_padding: int = 0,
    flip: bool = False,
    splits: list[Split] | None = None,
    classes: list[str] | None = None,
):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; no download).

    test_fraction of all images is the test split, then val_fraction of the rest is val; both
    stratified by class with `seed`. Normalisation statistics come from the train split (always
    computed: the data are bundled, so `splits` only leaves the other splits out). `classes`
    names the digits ("0".."9") label ids map to.
    """
    from sklearn.datasets import load_digits

    wanted = wanted_splits(splits)
    bunch = load_digits()
    images = torch.from_numpy(np.round(bunch.images * 255 / 16).astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target).long()
    rest, test = _stratified_split(np.arange(len(labels)), bunch.target, test_fraction, seed, "test_fraction")
    train, val = _stratified_split(rest, bunch.target, val_fraction, seed, "val_fraction")
    mean, std = _channel_stats(images[train])
    names = [str(d) for d in range(10)]
    data = [
        _labelled(TensorData(images[i], labels[i], f"digits {name}"), names, classes) if name in wanted else None
        for i, name in zip((train, val, test), SPLITS)
    ]
    transform = ImageTransform(mean, std, crop_padding=crop_padding, flip=flip)
    return _image_bundle(*data, classes or names, transform, channels=1, load_size=8)


@register_dataset(modality="image")
def cifar10(
    *,
    root: str | Path | None = None,
    val_fraction: float = 0.0,
    crop_size: int | None = None,
    crop_padding: int = 4,
    flip: bool = True,
    seed: int = 0,
    splits: list[Split] | None = None,
    classes: list[str] | None = None,
):
    """CIFAR-10: 60,000 32x32 colour images in 10 classes (downloads the 163 MiB python archive).

    The archive cifar-10-python.tar.gz is looked for in the folder `root`, else in data_dir()/cifar10
    ($GROVE_DATA_DIR, default ~/.cache/grove/data), and read without extracting. val_fraction > 0
    holds out that stratified share of the 50,000 training images as val; val_fraction=0 uses the
    10,000 test images as val (and as test).
    crop_size=24 trains on random 24x24 crops and evaluates on the center crop, as the survey's CNN.
    Only the batches the asked `splits` come from are unpickled. `classes` names the classes
    label ids map to (the archive's names: airplane, automobile ...).
    """
    if crop_size is not None and not 0 < crop_size <= 32:
        raise GroveError(f"crop_size must be between 1 and 32 for CIFAR-10's 32x32 images, got {crop_size}")
    wanted = wanted_splits(splits)
    if classes is not None:
        class_index(classes)
    folder = Path(root).expanduser() if root else data_dir() / "cifar10"
    archive = fetch(CIFAR10_URL, folder / "cifar-10-python.tar.gz", md5=CIFAR10_MD5, what="the CIFAR-10 archive")
    train_batches = [f"data_batch_{k}" for k in range(1, 6)]
    # val is held out of the training batches, or is the test batch when val_fraction is 0.
    needs_train = "train" in wanted or ("val" in wanted and bool(val_fraction))
    needs_test = "test" in wanted or ("val" in wanted and not val_fraction)
    read = (train_batches if needs_train else []) + (["test_batch"] if needs_test else [])
    batches, names = _read_cifar_archive(archive, read)
    train = _cifar_split([batches[b] for b in train_batches], f"{archive} train") if needs_train else None
    test = _cifar_split([batches["test_batch"]], f"{archive} test") if needs_test else None
    val = test
    if val_fraction and train is not None:
        labels = train.targets.numpy()
        kept, held = _stratified_split(np.arange(len(labels)), labels, val_fraction, seed, "val_fraction")
        train, val = (
            TensorData(*train.take(torch.from_numpy(index)), f"{archive} {name}")
            for index, name in zip((kept, held), SPLITS)
        )
    data = [_labelled(d, names, classes) if name in wanted else None for d, name in zip((train, val, test), SPLITS)]
    transform = ImageTransform(CIFAR10_MEAN, CIFAR10_STD, crop_size, crop_padding, flip)
    return _image_bundle(*data, classes or names, transform, channels=3, load_size=32)


def _read_cifar_archive(archive: Path, batch_names: list[str]) -> tuple[dict, list[str]]:
    """The pickled batches named (data_batch_1 ... test_batch) by file name, and the class names,
    read straight from the .tar.gz."""
    wanted = {*batch_names, "batches.meta"}
    batches = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # one pass: a gzip stream cannot seek back cheaply
                name = os.path.basename(member.name)
                if member.isfile() and name in wanted:
                    batches[name] = _unpickle(tar.extractfile(member))
    except (OSError, EOFError, zlib.error, tarfile.TarError, pickle.UnpicklingError) as e:
        raise GroveError(f"cannot read {archive} ({e}); delete it and run again") from None
    missing = sorted(wanted - set(batches))
    if missing:
        raise GroveError(f"{archive} is not the CIFAR-10 python archive (it lacks {', '.join(missing)})")
    names = batches.pop("batches.meta")["label_names"]
    return batches, [n.decode() if isinstance(n, bytes) else n for n in names]


def _unpickle(file) -> dict:
    # The official pickles were written by Python 2: latin1 turns their str keys into str; keys
    # pickled as bytes by Python 3 are decoded too, so both kinds of archive read the same.
    d = pickle.load(file, encoding="latin1")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_split(batches: list[dict], source: str) -> TensorData:
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    return TensorData(torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels), source)


@register_dataset(modality="image")
def image_folder(
    *,
    root: str | Path | None = None,
    image_size: int = 224,
    load_size: int | None = None,
    channels: Literal[1, 3] = 3,
    crop_padding: int = 0,
    flip: bool = True,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    num_classes: int | None = None,
    splits: list[Split] | None = None,
    classes: list[str] | None = None,
):
    """Your own images (or ImageNet) in class folders: root/{train,val,test}/<class>/*.jpg or root/<class>/*.jpg.

    The two layouts of grove.data.folders: split folders are used as they are (val_fraction of
    train/ is held out when there is no val/, test/ is used when present); class folders are
    split by root/validation_list.txt and root/testing_list.txt when present, else val_fraction
    and test_fraction are held out, stratified by class and seeded.
    Images are decoded to load_size (shorter side resized, center-cropped; default 256 for 224,
    the classic ImageNet recipe); training takes random image_size crops, evaluation the center
    crop. mean/std default to ImageNet's for 3 channels and 0.5 for 1 channel. num_classes, when
    given, is checked against the class folders found.
    `splits` builds only those (in split folders only their folders, and train/ where needed,
    are read); `classes` names the classes label ids map to, in place of the sorted class folders.
    """
    if root is None:
        raise GroveError(
            "data.root is required for image_folder: pass data.root=/path/to/images "
            "(with <class>/ folders, or train/ and val/ holding them)"
        )
    if channels not in (1, 3):
        raise GroveError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if load_size is None:
        load_size = round(image_size * 256 / 224) if image_size >= 64 else image_size
    if load_size < image_size:
        raise GroveError(f"load_size ({load_size}) must be at least image_size ({image_size})")
    mean = mean or (IMAGENET_MEAN if channels == 3 else [0.5])
    std = std or (IMAGENET_STD if channels == 3 else [0.5])
    if len(mean) != channels or len(std) != channels:
        raise GroveError(f"mean and std need {channels} values each (one per channel), got {mean} and {std}")

    found = scan_folders(
        root,
        IMAGE_EXTENSIONS,
        what="images",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        splits=splits,
        classes=classes,
    )
    if num_classes is not None and num_classes != len(found.classes):
        raise GroveError(f"num_classes is {num_classes} but {root} has {len(found.classes)} class folders")
    train, val, test = (
        ImageFiles(items, load_size, channels) if items else None for items in (found.train, found.val, found.test)
    )
    transform = ImageTransform(list(mean), list(std), image_size, crop_padding, flip)
    return _image_bundle(train, val, test, found.classes, transform, channels, load_size, layout=found.layout)
