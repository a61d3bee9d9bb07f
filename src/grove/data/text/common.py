"""What the text data sets share: tokenizers named in a recipe, reading text, option checks."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from grove.data.tokenizers import Tokenizer, load_tokenizer
from grove.errors import GroveError, did_you_mean
from grove.paths import resolve

BUILTIN_TOKENIZERS = ("char", "word", "bpe")


def no_transform(x: torch.Tensor, train: bool) -> torch.Tensor:
    """Token ids go to the model as they are (a module-level function, so bundles pickle)."""
    return x


def tokenizer_from_path(spec, vocab_size) -> Tokenizer:
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


def saved_tokenizer(saved_dir, kind: str) -> Tokenizer:
    """The tokenizer a trained run fitted and saved in its data/ folder (`saved_dir`), which must
    be of the `kind` the recipe asks for."""
    tok = load_tokenizer(Path(saved_dir).expanduser())
    if tok.kind != kind:
        raise GroveError(f"{saved_dir} holds a {tok.kind} tokenizer, but the recipe asks for tokenizer={kind}")
    return tok


def tokenizer_meta(tok: Tokenizer) -> dict:
    return {"tokenizer_path": str(tok.directory)} if hasattr(tok, "directory") else {}


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GroveError(f"{path} is not UTF-8 text") from None
    except OSError as e:
        raise GroveError(f"cannot read {path}: {e.strerror or e}") from None


def check_positive(**options) -> None:
    for name, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GroveError(f"{name} must be a positive whole number, got {value!r}")
