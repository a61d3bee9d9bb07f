"""Labelled files in class folders, in either of two layouts, split into train, val and test.

    split folders  root/{train,val,test}/<class>/<file>   train/ is required and test/ is used
                   when present; without val/, val_fraction of train/ is held out
    class folders  root/<class>/<file>                    root/validation_list.txt and
                   root/testing_list.txt (paths relative to root, one a line, as Speech Commands
                   ships them) choose val and test when present; otherwise val_fraction and
                   test_fraction of the files are held out

The layout is told from the names of root's folders. Held-out files are ranked by a seeded hash
of their path and taken stratified by class: ceil(fraction x files) in all, each class giving its
share and keeping at least one training file. With `group` (e.g. a speaker's clips), files of one
group move together: whole groups are ranked and held out (ceil(fraction x groups)), which keeps
the class shares only approximately. Files may sit in sub-folders of a class folder;
folders and files starting with "." and folders named in `ignore` are skipped.
A layout that looks wrong is a one-line GroveError saying what was expected.

`splits` names the splits wanted (the others come back empty); in split folders only their
folders are read, and train/ too where it is needed: for the class names, or to hold val out of.
`classes` gives the class names label ids map to (a trained run's): files are held out as
without it, then relabelled by name, and a wanted file whose class is not among them is an error.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

from grove.data.base import SPLITS, class_index, unknown_label, wanted_splits
from grove.errors import GroveError

SPLIT_LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}


@dataclass
class FolderSplits:
    """(path, class index) pairs per split, sorted by class then path; test, and the splits not
    wanted, may be empty."""

    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    layout: Literal["split_folders", "class_folders"]


def scan_folders(
    root: Path | str,
    extensions: tuple[str, ...],
    *,
    what: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    ignore: tuple[str, ...] = (),
    group: Callable[[str], str] | None = None,
    splits: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> FolderSplits:
    """The splits of the labelled files under `root`; `what` names the files in messages
    ("images"), `group(relative path)` names the group a file belongs to; `splits` (None: all)
    and `classes` as the module says."""
    wanted = wanted_splits(splits)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise GroveError(f"{root} is not a folder: {_expected(root)}")
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise GroveError(f"{name} must be in [0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1:
        raise GroveError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    scan = _Scan(root, tuple(e.lower() for e in extensions), what, ignore, seed, group, classes is None)
    folders = _subfolders(root, ignore)
    named = [f for f in folders if f in SPLITS]
    if named and len(named) < len(folders):
        others = ", ".join(f"{f}/" for f in folders if f not in SPLITS)
        raise GroveError(
            f"{root} mixes split folders ({', '.join(f'{f}/' for f in named)}) with other folders ({others}): "
            f"use {root}/{{train,val,test}}/<class>/<file> or {root}/<class>/<file>, not both; "
            "a class cannot be named train, val or test"
        )
    if named:
        found = scan.split_folders(named, val_fraction, wanted)
    else:
        found = scan.class_folders(val_fraction, test_fraction)
    if "train" in wanted and not found.train:
        raise GroveError(f"the train split of {root} is empty: every file is held out for val or test")
    if "val" in wanted and not found.val:
        raise GroveError(
            f"the val split of {root} is empty: add files, raise val_fraction or list files in {SPLIT_LISTS['val']}"
        )
    found = replace(found, **{name: [] for name in SPLITS if name not in wanted})
    return found if classes is None else _relabel(found, list(classes))


def _relabel(found: FolderSplits, classes: list[str]) -> FolderSplits:
    """`found` with its labels (indices into the folders' classes) as indices into `classes`."""
    index = class_index(classes)

    def relabel(items):
        out = []
        for file, label in items:
            name = found.classes[label]
            if name not in index:
                raise unknown_label(name, file, classes, given=True)
            out.append((file, index[name]))
        return out

    return replace(found, classes=classes, **{name: relabel(getattr(found, name)) for name in SPLITS})


class _Scan:
    def __init__(self, root: Path, extensions, what: str, ignore, seed: int, group, derive_classes: bool):
        self.root, self.extensions, self.what = root, extensions, what
        self.ignore, self.seed, self.group = ignore, seed, group
        # Classes are told from the folders, and checked to be the same in every split, unless
        # the caller gives them (and relabels the files by name afterwards).
        self.derive_classes = derive_classes

    def split_folders(self, present: list[str], val_fraction: float, wanted: frozenset[str]) -> FolderSplits:
        root = self.root
        holds_out_val = "val" not in present and bool(wanted & {"train", "val"})
        read = [
            name
            for name in present
            if name in wanted or (name == "train" and (self.derive_classes or holds_out_val))
        ]
        if "train" not in present and (self.derive_classes or holds_out_val or "train" in wanted):
            raise GroveError(
                f"{root} has {', '.join(f'{p}/' for p in present)} but no train/: expected {root}/train/<class>/<file>"
            )
        per_split = {name: self._class_files(root / name) for name in read}
        classes = sorted(per_split.get("train", ()))
        for name in read if self.derive_classes else ():
            if sorted(per_split[name]) != classes:
                lacks = sorted(set(classes) - set(per_split[name]))
                extra = sorted(set(per_split[name]) - set(classes))
                difference = f"lacks {', '.join(lacks)}" if lacks else f"has {', '.join(extra)}, which train/ lacks"
                raise GroveError(
                    f"{root / name} and {root / 'train'} have different class folders ({name}/ {difference}): "
                    "every split needs a folder for each class"
                )
        if self.derive_classes:
            self._need_two(root / "train", classes)
        # train/'s classes first, so that holding val out of it gives what it gives without
        # `classes`; class folders only other splits have (relabelled by the caller) after them.
        classes += sorted({c for files in per_split.values() for c in files} - set(classes))
        index = {c: i for i, c in enumerate(classes)}
        items = {
            name: [(f, index[c]) for c in classes if c in files for f in files[c]] for name, files in per_split.items()
        }
        train, val = items.get("train", []), items.get("val", [])
        if holds_out_val:
            if not val_fraction:
                raise GroveError(
                    f"{root} has no val/ folder and val_fraction is 0: add {root}/val/<class>/<file> "
                    "or set data.val_fraction"
                )
            train, val, _ = self._hold_out(train, root / "train", val_fraction, 0.0)
        return FolderSplits(classes, train, val, items.get("test", []), "split_folders")

    def class_folders(self, val_fraction: float, test_fraction: float) -> FolderSplits:
        root = self.root
        per_class = self._class_files(root)
        classes = sorted(per_class)
        if self.derive_classes:
            self._need_two(root, classes)
        items = [(file, label) for label, c in enumerate(classes) for file in per_class[c]]
        lists = {name: _read_list(root / file) for name, file in SPLIT_LISTS.items()}
        listed = {"val": [], "test": []}
        rest = []
        for item in items:
            rel = _relative(item[0], root)
            split = next((name for name in ("test", "val") if lists[name] and rel in lists[name]), None)
            (listed[split] if split else rest).append(item)
        for name, file in SPLIT_LISTS.items():
            if lists[name] and not listed[name]:
                raise GroveError(
                    f"{root / file} lists {len(lists[name])} files and none of them is under {root}: "
                    f"its lines must be paths relative to {root}, such as {_relative(items[0][0], root)}"
                )
        val_share = 0.0 if lists["val"] is not None else val_fraction
        test_share = 0.0 if lists["test"] is not None else test_fraction
        train, val, test = self._hold_out(rest, root, val_share, test_share)
        val, test = _by_class(listed["val"] + val), _by_class(listed["test"] + test)
        return FolderSplits(classes, train, val, test, "class_folders")

    def _class_files(self, folder: Path) -> dict[str, list[str]]:
        classes = _subfolders(folder, self.ignore)
        if not classes:
            loose = list_files(folder, self.extensions, recurse=False)
            split_hint = (
                f"; a class cannot be named {folder.name}: split folders hold class folders"
                if folder.name in SPLITS and folder != self.root
                else ""
            )
            if loose:
                raise GroveError(
                    f"{folder} holds {self.what} directly, not in class folders: "
                    f"expected {folder}/<class>/<file>{split_hint}"
                )
            raise GroveError(f"no {self.what} ({' '.join(self.extensions)}) in {folder}: {_expected(self.root)}")
        nested = [c for c in classes if c in SPLITS]
        if nested:
            raise GroveError(
                f"{folder / nested[0]} is a split folder inside {folder}: expected {folder}/<class>/<file>; "
                "a class cannot be named train, val or test"
            )
        files = {c: list_files(folder / c, self.extensions) for c in classes}
        empty = [c for c in classes if not files[c]]
        if empty:
            others = f" (nor {len(empty) - 1} other class folders)" if len(empty) > 1 else ""
            raise GroveError(
                f"class folder {folder / empty[0]} has no {self.what} ({' '.join(self.extensions)}){others}: "
                f"put each class's files in {folder}/<class>/, or remove the empty folder"
            )
        return files

    def _need_two(self, folder: Path, classes: list[str]) -> None:
        if len(classes) < 2:
            raise GroveError(
                f"{folder} has one class folder ({classes[0]}/): classification needs at least two classes, "
                f"each in its own folder ({_expected(self.root)})"
            )

    def _hold_out(self, items: list, base: Path, val_fraction: float, test_fraction: float):
        """(train, val, test) lists out of `items`, in their order."""
        keys = [_relative(f, base) for f, _ in items]
        if self.group is not None:
            keys = [self.group(k) for k in keys]
        if len(set(keys)) < len(keys):  # groups of several files: hold out whole groups
            groups = sorted(set(keys), key=lambda k: (_hash_unit(self.seed, k), k))
            # The groups are shared out as the files of one class are: ceil(fraction x groups).
            n_test = _quotas({0: len(groups)}, test_fraction, {})[0]
            n_val = _quotas({0: len(groups)}, val_fraction, {0: n_test})[0]
            rank = {k: r for r, k in enumerate(groups)}
            split_of = {k: "test" if r < n_test else "val" if r < n_test + n_val else "train" for k, r in rank.items()}
            where = [split_of[k] for k in keys]
        else:
            where = self._stratified(items, keys, val_fraction, test_fraction)
        return tuple([item for item, w in zip(items, where) if w == name] for name in ("train", "val", "test"))

    def _stratified(self, items: list, keys: list[str], val_fraction: float, test_fraction: float) -> list[str]:
        by_class = defaultdict(list)
        for i, (_, label) in enumerate(items):
            by_class[label].append(i)
        counts = {c: len(ix) for c, ix in by_class.items()}
        n_test = _quotas(counts, test_fraction, {})
        n_val = _quotas(counts, val_fraction, n_test)
        where = ["train"] * len(items)
        for c, ix in by_class.items():
            ranked = sorted(ix, key=lambda i: (_hash_unit(self.seed, keys[i]), keys[i]))
            for i in ranked[: n_test[c]]:
                where[i] = "test"
            for i in ranked[n_test[c] : n_test[c] + n_val[c]]:
                where[i] = "val"
        return where


def _quotas(counts: dict[int, int], fraction: float, taken: dict[int, int]) -> dict[int, int]:
    """Files to hold out per class: ceil(fraction of all files) in all, shared in proportion to
    the classes' sizes (largest remainders first), each class keeping at least one for training."""
    if not fraction:
        return {c: 0 for c in counts}
    total = math.ceil(round(sum(counts.values()) * fraction, 9))
    spare = {c: n - taken.get(c, 0) - 1 for c, n in counts.items()}
    quota = {c: max(0, min(math.floor(round(n * fraction, 9)), spare[c])) for c, n in counts.items()}
    short = total - sum(quota.values())
    for c in sorted(counts, key=lambda c: (-(counts[c] * fraction % 1), c)):
        if short <= 0:
            break
        if quota[c] < spare[c]:
            quota[c] += 1
            short -= 1
    return quota


def _by_class(items: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(items, key=lambda item: (item[1], item[0]))


def _subfolders(folder: Path, ignore) -> list[str]:
    visible = (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return sorted(d.name for d in visible if d.name not in ignore)


def list_files(folder: Path, extensions: tuple[str, ...], recurse: bool = True) -> list[str]:
    """The files under `folder` (and its sub-folders) ending in one of `extensions`, any case, sorted."""
    files = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recurse else []
        files += [os.path.join(parent, n) for n in names if not n.startswith(".") and n.lower().endswith(extensions)]
    return sorted(files)


def _read_list(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def _relative(file: str, base: Path) -> str:
    """`file` (a path list_files made under `base`) relative to base, with "/" separators."""
    return file[len(str(base)) + 1 :].replace(os.sep, "/")


def _hash_unit(seed: int, key: str) -> float:
    """A stable number in [0, 1) for `key` and `seed`: the order in which files are held out, so a
    file's split depends on its own name, not on the order the file system lists it in."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _expected(root: Path) -> str:
    return f"expected {root}/<class>/<file> or {root}/{{train,val,test}}/<class>/<file>"
