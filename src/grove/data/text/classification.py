"""Text classification: your labelled CSV/TSV/JSONL files, and GLUE's SST-2.

`TextClassificationData` holds token ids of any length per example, padded per batch by its
`collate`. The bundle carries its tokenizer in `files`.

Every builder here takes `splits` (only those are read and tokenised), `saved_dir` (a trained
run's data/ folder: its saved char, word or bpe tokenizer is loaded instead of fitted on train)
and `classes` (the labels ids map to, in place of those seen in train). With all three, as
`grove evaluate` passes them, the training file is never read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from grove.data.base import SPLITS, DataBundle, Split, class_index, unknown_label, wanted_splits
from grove.data.download import data_dir, extract_files, fetch
from grove.data.text.common import (
    BUILTIN_TOKENIZERS,
    check_positive,
    no_transform,
    saved_tokenizer,
    tokenizer_from_path,
    tokenizer_meta,
)
from grove.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, tokenizer_files
from grove.errors import GroveError, did_you_mean
from grove.registry import register_dataset

# GLUE's SST-2 archive, with torchtext's md5.
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_MD5 = "9f81648d4199384278b86e315dac217c"
Format = Literal["csv", "tsv", "jsonl"]


class TextClassificationData:
    """Token ids (any length) and a class index per example.

    `lengths` lets a loader bucket examples of similar length; `collate` pads a batch to its
    longest example with `pad_id`, so models find padding as `inputs == pad_id`.
    """

    def __init__(self, ids: list[list[int]], labels: list[int], pad_id: int, sources: list[str] | None = None):
        if len(ids) != len(labels):
            raise ValueError("ids and labels differ in length")
        self.lengths = [len(x) for x in ids]
        self.tokens = torch.tensor([i for x in ids for i in x], dtype=torch.long)  # all examples end to end
        self.offsets = [0]
        for n in self.lengths:
            self.offsets.append(self.offsets[-1] + n)
        self.labels = list(labels)
        self.pad_id = pad_id
        self.sources = sources

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.tokens[self.offsets[i] : self.offsets[i + 1]], self.labels[i]

    def path(self, i: int) -> str:
        return self.sources[i] if self.sources else f"example {i}"

    def collate(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(x) for x, _ in items)
        inputs = torch.full((len(items), longest), self.pad_id, dtype=torch.long)  # (B, T_max)
        for row, (x, _) in enumerate(items):
            inputs[row, : len(x)] = x
        return inputs, torch.as_tensor([y for _, y in items], dtype=torch.long)


@register_dataset(modality="text")
def text_classification(
    *,
    root: str | Path | None = None,
    train: str = "train.csv",
    val: str = "dev.csv",
    test: str | None = None,
    format: Format | None = None,
    text_field: str = "text",
    label_field: str = "label",
    tokenizer: str = "word",
    vocab_size: int = 8000,
    max_len: int = 128,
    lowercase: bool = True,
    splits: list[Split] | None = None,
    saved_dir: str | None = None,
    classes: list[str] | None = None,
):
    """Your own labelled texts: CSV, TSV or JSON-lines files with a text and a label per row.

    train/val/test are file names relative to `root`; format (csv, tsv, jsonl) defaults to each
    file's extension. Classes are the labels seen in train, sorted (numerically when all are
    numbers). tokenizer is char, word, bpe (fitted on train; vocab_size caps word and bpe) or the
    path of a Hugging Face tokenizer directory (e.g. a BERT's, adding [CLS]/[SEP]). Texts are cut
    to max_len tokens. lowercase applies to grove's own tokenizers; a Hugging Face tokenizer
    normalises text as it was trained to.
    """
    if not val:
        raise GroveError("text_classification needs a val file: set data.val")
    folder = Path(root).expanduser() if root else Path(".")
    if val == "dev.csv" and not (folder / val).exists() and (splits is None or "val" in splits):
        raise GroveError(f"no validation file {folder / val} (dev.csv is the default name): "
                         "name yours with data.val=FILE, relative to data.root")

    def reader(name: str):
        return lambda: _read_rows(folder / name, format, text_field, label_field)

    files = {"train": train, "val": val, "test": test}
    sources = {split: reader(name) for split, name in files.items() if name}
    return classification_bundle(
        "text_classification", sources, tokenizer, vocab_size, max_len, lowercase, splits, saved_dir, classes
    )


@register_dataset(modality="text")
def sst2(
    *,
    root: str | Path | None = None,
    tokenizer: str = "word",
    vocab_size: int = 8000,
    max_len: int = 128,
    lowercase: bool = True,
    splits: list[Split] | None = None,
    saved_dir: str | None = None,
    classes: list[str] | None = None,
):
    """GLUE SST-2: 67k movie-review phrases labelled negative (0) or positive (1).

    Reads train.tsv and dev.tsv (columns sentence, label) from `root`, else from data_dir()/sst2;
    when they are missing, GLUE's SST-2.zip is downloaded into that folder and they are extracted.
    dev is val; GLUE's test.tsv has no labels, so there is no test split. Options as for
    text_classification.
    """
    folder = Path(root).expanduser() if root else data_dir() / "sst2"
    names = ("train.tsv", "dev.tsv")

    def reader(name: str):
        def read():
            if not (folder / name).exists():  # files put there by hand are kept
                archive = fetch(SST2_URL, folder / "SST-2.zip", md5=SST2_MD5, what="the SST-2 archive")
                extract_files(archive, folder, {f"SST-2/{n}": n for n in names})
            return _read_rows(folder / name, "tsv", "sentence", "label")

        return read

    sources = {"train": reader("train.tsv"), "val": reader("dev.tsv")}
    return classification_bundle("sst2", sources, tokenizer, vocab_size, max_len, lowercase, splits, saved_dir, classes)


Rows = tuple[str, list]  # (file name, [(text, label, line)])


def classification_bundle(
    name,
    sources: dict[str, Callable[[], Rows]],
    tokenizer,
    vocab_size,
    max_len,
    lowercase,
    splits=None,
    saved_dir=None,
    classes=None,
) -> DataBundle:
    """sources: split -> a function reading its rows, for each split the data set has (train
    always). The train rows are read only where needed: for the labels (no `classes`), to fit
    the tokenizer (no `saved_dir`), or to build the train split."""
    check_positive(max_len=max_len)
    wanted = wanted_splits(splits)
    read: dict[str, Rows] = {}

    def rows(split: str) -> Rows:
        if split not in read:
            read[split] = sources[split]()
        return read[split]

    given = classes is not None
    if classes is None:
        classes = _sorted_labels({label for _, label, _ in rows("train")[1]})
    index = class_index(classes)
    tok = _classification_tokenizer(
        tokenizer, lambda: [t for t, _, _ in rows("train")[1]], vocab_size, lowercase, saved_dir
    )
    if tok.pad_id is None:
        raise GroveError(f"the tokenizer {tokenizer} has no pad token, which classification batches need")
    if getattr(tok, "model_max_length", None) and max_len > tok.model_max_length:
        raise GroveError(
            f"max_len={max_len} is longer than the tokenizer's model_max_length {tok.model_max_length}"
        )

    def split_data(file: str, examples) -> TextClassificationData:
        labels = []
        for text, label, line in examples:
            if label not in index:
                raise unknown_label(label, f"{file} line {line}", classes, given)
            labels.append(index[label])
        ids = tok.encode_batch([t for t, _, _ in examples], add_special_tokens=True, max_length=max_len)
        return TextClassificationData(ids, labels, tok.pad_id, [f"{file} line {line}" for _, _, line in examples])

    data = {split: split_data(*rows(split)) for split in SPLITS if split in sources and split in wanted}
    meta = {
        "modality": "text",
        "kind": "classification",
        "dataset": name,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "max_len": max_len,
        "pad_id": tok.pad_id,
    }
    return DataBundle(
        train=data.get("train"),
        val=data.get("val"),
        test=data.get("test"),
        classes=list(classes),
        transform=no_transform,
        meta=meta | tokenizer_meta(tok),
        model_defaults={"vocab_size": tok.vocab_size, "num_classes": len(classes), "pad_id": tok.pad_id},
        files=tokenizer_files(tok),
    )


def _classification_tokenizer(
    spec, train_texts: Callable[[], list[str]], vocab_size, lowercase, saved_dir
) -> Tokenizer:
    """The tokenizer `spec` names: fitted on train_texts(), or loaded from saved_dir where a run
    saved it; a Hugging Face tokenizer directory is read as it is (nothing is fitted)."""
    if spec in BUILTIN_TOKENIZERS and saved_dir is not None:
        return saved_tokenizer(saved_dir, spec)
    if spec == "char":
        return CharTokenizer.fit(train_texts(), specials=["<pad>", "<unk>"], lowercase=lowercase)
    if spec == "word":
        return WordTokenizer.fit(
            train_texts(), eos=False, pad=True, lowercase=lowercase, split_punctuation=True, max_size=vocab_size
        )
    if spec == "bpe":
        return BPETokenizer.fit(train_texts(), vocab_size, pad=True, lowercase=lowercase)
    return tokenizer_from_path(spec, None)


def _read_rows(path: Path, format, text_field: str, label_field: str) -> tuple[str, list]:
    """(file name, [(text, label as str, line number)]) from a csv, tsv or jsonl file."""
    if not path.is_file():
        raise GroveError(f"no such file: {path}")
    if format is not None and format not in ("csv", "tsv", "jsonl"):
        raise GroveError(f"format must be csv, tsv or jsonl, got {format!r}")
    fmt = format or path.suffix.lower().lstrip(".")
    if fmt not in ("csv", "tsv", "jsonl"):
        raise GroveError(
            f"cannot tell the format of {path} from its extension: set data.format to csv, tsv or jsonl"
        )
    rows = []
    try:
        # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark.
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "jsonl":
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise GroveError(f"{path} line {line_no} is not JSON: {e}") from None
                    if not isinstance(record, dict):
                        raise GroveError(f"{path} line {line_no} is not a JSON object")
                    for field in (text_field, label_field):
                        if field not in record:
                            raise GroveError(_missing_field(path, field, list(record), f" line {line_no}"))
                    rows.append((record[text_field], record[label_field], line_no))
            else:
                # GLUE's TSVs contain bare quote characters: tab-separated files are read unquoted.
                quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
                reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",", quoting=quoting)
                columns = reader.fieldnames or []
                for field in (text_field, label_field):
                    if field not in columns:
                        raise GroveError(_missing_field(path, field, columns, ""))
                for record in reader:
                    rows.append((record[text_field], record[label_field], reader.line_num))
    except UnicodeDecodeError:
        raise GroveError(f"{path} is not UTF-8 text") from None
    except csv.Error as e:
        raise GroveError(f"cannot read {path} as {fmt}: {e}") from None
    if not rows:
        raise GroveError(f"{path} has no examples")
    examples = []
    for text, label, line in rows:
        for field, value in ((text_field, text), (label_field, label)):
            if value is None or not str(value).strip():
                raise GroveError(f"{path} line {line} has an empty {field!r}")
        examples.append((str(text), str(label).strip(), line))
    return path.name, examples


def _missing_field(path: Path, field: str, found: list, where: str) -> str:
    shown = ", ".join(map(str, found)) or "none"
    return f"{path}{where} has no field {field!r}{did_you_mean(field, found)}; the fields found are: {shown}"


def _sorted_labels(labels: set[str]) -> list[str]:
    """Numerically when every label is a number ("2" before "10"), else alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)
