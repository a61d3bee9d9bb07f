"""Text <-> token ids, in four kinds behind one small interface.

    char  every character is a token (nanoGPT's shakespeare_char, char-rnn)
    word  whitespace words with <unk> and an <eos> at every line end (Penn Treebank, WikiText)
    bpe   byte-level BPE trained here with Hugging Face `tokenizers` (GPT-2's scheme, small vocab)
    hf    any local Hugging Face tokenizer directory (tokenizer.json), e.g. a BERT WordPiece

Each saves itself into a directory (`save(dir)`), and `load_tokenizer(dir)` restores whichever kind
was saved, so a run directory carries the exact tokenizer its model was trained with. A directory
with grove_tokenizer.json was saved by grove; one with only tokenizer.json is read as a Hugging
Face tokenizer.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from grove.errors import GroveError
from grove.files import atomic_write

GROVE_FILE = "grove_tokenizer.json"
HF_FILE = "tokenizer.json"
# What a Hugging Face tokenizer directory may hold besides tokenizer.json; copied so that the saved
# directory still loads with transformers' AutoTokenizer.
HF_SIDE_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
_SHOWN_CHARS = 40  # how many known characters an out-of-vocabulary error lists
# Words, with an apostrophe inside a word kept ("don't"), and each punctuation mark on its own.
_WORD_OR_MARK = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


class Tokenizer:
    """The interface every kind honours.

    `encode(text, add_special_tokens=True, max_length=None)` gives ids; only Hugging Face
    tokenizers have special tokens to add ([CLS] ... [SEP]); max_length truncates.
    `pad_id`, `eos_id`, `unk_id` are None where a kind has no such token.
    """

    kind: str = ""
    pad_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str, *, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        ids = self._encode(text)
        return ids[:max_length] if max_length is not None else ids

    def encode_batch(self, texts: list[str], **options) -> list[list[int]]:
        return [self.encode(t, **options) for t in texts]

    def decode(self, ids) -> str:
        raise NotImplementedError

    def save(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_extra(directory)
        state = {"kind": self.kind, **self._state()}
        atomic_write(directory / GROVE_FILE, json.dumps(state, ensure_ascii=False, indent=1) + "\n")

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _state(self) -> dict:
        return {}

    def _save_extra(self, directory: Path) -> None:
        pass


class CharTokenizer(Tokenizer):
    """One id per character: `specials` first (e.g. <pad>, <unk> for classification), then the
    characters in sorted order, so the ids of a plain character vocabulary match nanoGPT's."""

    kind = "char"

    def __init__(self, chars: list[str], *, specials: list[str] = (), lowercase: bool = False):
        self.specials = list(specials)
        self.chars = list(chars)
        self.lowercase = lowercase
        self.itos = self.specials + self.chars
        self.stoi = {c: i for i, c in enumerate(self.chars, start=len(self.specials))}
        self.pad_id = self.specials.index("<pad>") if "<pad>" in self.specials else None
        self.unk_id = self.specials.index("<unk>") if "<unk>" in self.specials else None

    @classmethod
    def fit(cls, text: str | Iterable[str], *, specials: list[str] = (), lowercase: bool = False) -> CharTokenizer:
        texts = [text] if isinstance(text, str) else text
        chars: set[str] = set()
        for t in texts:
            chars.update(t.lower() if lowercase else t)
        return cls(sorted(chars), specials=specials, lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def _encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        stoi = self.stoi
        if self.unk_id is not None:
            unk = self.unk_id
            return [stoi.get(c, unk) for c in text]
        try:
            return [stoi[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - stoi.keys())
            known = "".join(self.chars[:_SHOWN_CHARS])
            more = f" and {len(self.chars) - _SHOWN_CHARS} more" if len(self.chars) > _SHOWN_CHARS else ""
            raise GroveError(
                f"the text has {len(unknown)} character(s) outside the vocabulary: "
                f"{', '.join(repr(c) for c in unknown[:_SHOWN_CHARS])}; remove or replace them "
                f"(the model knows {len(self.chars)} characters: {known!r}{more})"
            ) from None

    def decode(self, ids) -> str:
        itos, pad = self.itos, self.pad_id
        return "".join(itos[i] for i in _as_list(ids) if i != pad)

    def _state(self) -> dict:
        return {"chars": self.chars, "specials": self.specials, "lowercase": self.lowercase}


class WordTokenizer(Tokenizer):
    """Whitespace words (Penn Treebank style), or words and punctuation marks (`split_punctuation`).

    Words the vocabulary lacks become <unk>. With `eos`, every line end is an <eos> token and
    decoding turns it back into a newline. The vocabulary lists the specials first, then words by
    descending frequency, ties alphabetically, so fitting is deterministic.
    """

    kind = "word"

    def __init__(
        self,
        words: list[str],
        *,
        eos: bool = True,
        pad: bool = False,
        lowercase: bool = False,
        split_punctuation: bool = False,
    ):
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.eos = eos
        self.lowercase = lowercase
        self.split_punctuation = split_punctuation
        self.unk_id = self.stoi["<unk>"]
        self.eos_id = self.stoi["<eos>"] if eos else None
        self.pad_id = self.stoi["<pad>"] if pad else None

    @staticmethod
    def specials(*, eos: bool, pad: bool) -> list[str]:
        return (["<pad>"] if pad else []) + ["<unk>"] + (["<eos>"] if eos else [])

    @classmethod
    def fit(
        cls,
        texts: str | Iterable[str],
        *,
        eos: bool = True,
        pad: bool = False,
        lowercase: bool = False,
        split_punctuation: bool = False,
        max_size: int | None = None,
    ) -> WordTokenizer:
        """The vocabulary of `texts` (one string or many); `max_size` caps it, specials included,
        keeping the most frequent words."""
        specials = cls.specials(eos=eos, pad=pad)
        if max_size is not None and max_size <= len(specials):
            raise GroveError(f"vocab_size must be larger than the {len(specials)} special tokens, got {max_size}")
        probe = cls(specials, eos=eos, pad=pad, lowercase=lowercase, split_punctuation=split_punctuation)
        counts: Counter = Counter()
        for text in [texts] if isinstance(texts, str) else texts:
            counts.update(probe._words(text))
        for s in specials:
            counts.pop(s, None)
        words = sorted(counts, key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - len(specials)]
        return cls(specials + words, eos=eos, pad=pad, lowercase=lowercase, split_punctuation=split_punctuation)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def _words(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        return _WORD_OR_MARK.findall(text) if self.split_punctuation else text.split()

    def _encode(self, text: str) -> list[int]:
        stoi, unk = self.stoi, self.unk_id
        if not self.eos:
            return [stoi.get(w, unk) for w in self._words(text)]
        ids = []
        *ended, last = text.split("\n")  # every piece but the last ended with a newline
        for line in ended:
            ids.extend(stoi.get(w, unk) for w in self._words(line))
            ids.append(self.eos_id)
        ids.extend(stoi.get(w, unk) for w in self._words(last))
        return ids

    def decode(self, ids) -> str:
        lines, words = [], []
        for i in _as_list(ids):
            if i == self.eos_id:
                lines.append(" ".join(words))
                words = []
            elif i != self.pad_id:
                words.append(self.itos[i])
        return "\n".join(lines + [" ".join(words)])

    def _state(self) -> dict:
        return {
            "words": self.itos,
            "eos": self.eos,
            "pad": self.pad_id is not None,
            "lowercase": self.lowercase,
            "split_punctuation": self.split_punctuation,
        }


class _HFBacked(Tokenizer):
    """A kind that runs on a Hugging Face `tokenizers.Tokenizer` (fast, in Rust)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _id(self, token: str | None) -> int | None:
        return self.tokenizer.token_to_id(token) if token else None


class BPETokenizer(_HFBacked):
    """Byte-level BPE (GPT-2's scheme): any text encodes without <unk>, and decoding gives the
    exact bytes back. Reserves <|endoftext|> (eos) and, for padded batches, <pad>."""

    kind = "bpe"
    EOS, PAD = "<|endoftext|>", "<pad>"

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.eos_id = self._id(self.EOS)
        self.pad_id = self._id(self.PAD)

    @classmethod
    def fit(
        cls, texts: str | Iterable[str], vocab_size: int, *, pad: bool = False, lowercase: bool = False
    ) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

        specials = ([cls.PAD] if pad else []) + [cls.EOS]
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + len(specials):
            raise GroveError(
                f"vocab_size must be at least {len(alphabet) + len(specials)} for byte-level BPE "
                f"(256 bytes + {len(specials)} special tokens), got {vocab_size}"
            )
        tok = HFTok(models.BPE())
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
        )
        if isinstance(texts, str):
            texts = texts.splitlines(keepends=True)  # keeps "\n" bytes in what merges are learnt from
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str], *, add_special_tokens: bool = True, max_length: int | None = None):
        return [
            e.ids[:max_length] if max_length is not None else e.ids for e in self.tokenizer.encode_batch(texts)
        ]

    def decode(self, ids) -> str:
        ids = [i for i in _as_list(ids) if i != self.pad_id]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _save_extra(self, directory: Path) -> None:
        atomic_write(directory / HF_FILE, self.tokenizer.to_str(pretty=True))

    @classmethod
    def _load(cls, directory: Path, state: dict) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTok

        return cls(HFTok.from_file(str(_need(directory / HF_FILE))))


class HFTokenizer(_HFBacked):
    """A local Hugging Face tokenizer directory (its tokenizer.json), with the special tokens named
    in special_tokens_map.json / tokenizer_config.json. Encoding adds [CLS] ... [SEP] (or whatever
    the tokenizer's post-processor adds) unless add_special_tokens=False; padding is left to the
    batch collation, so the directory's own padding and truncation settings are switched off."""

    kind = "hf"

    def __init__(self, directory):
        from tokenizers import Tokenizer as HFTok

        directory = Path(directory).expanduser()
        if not directory.is_dir():
            raise GroveError(f"no tokenizer directory at {directory}")
        path = directory / HF_FILE
        if not path.is_file():
            raise GroveError(
                f"{directory} has no {HF_FILE}: grove reads Hugging Face tokenizers in the fast format; "
                "save one with transformers' AutoTokenizer.from_pretrained(...).save_pretrained(dir)"
            )
        try:
            tok = HFTok.from_file(str(path))
        except Exception as e:  # the Rust library reports a malformed file as a plain Exception
            raise GroveError(f"cannot read {path}: {' '.join(str(e).split())}") from None
        super().__init__(tok)
        self.directory = directory
        self.special_tokens = _special_tokens(directory)
        config = _read_json(directory / "tokenizer_config.json")
        limit = config.get("model_max_length")
        # transformers writes a huge sentinel (1e30) when a tokenizer has no limit of its own.
        self.model_max_length = int(limit) if isinstance(limit, (int, float)) and limit < 1e9 else None
        declared_pad = self._id(self.special_tokens.get("pad_token"))
        self.pad_id = declared_pad if declared_pad is not None else (tok.padding or {}).get("pad_id")
        self.unk_id = self._id(self.special_tokens.get("unk_token"))
        self.eos_id = self._id(self.special_tokens.get("eos_token"))
        self.cls_id = self._id(self.special_tokens.get("cls_token"))
        self.sep_id = self._id(self.special_tokens.get("sep_token"))
        tok.no_padding()
        tok.no_truncation()

    def encode(self, text: str, *, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        return self.encode_batch([text], add_special_tokens=add_special_tokens, max_length=max_length)[0]

    def encode_batch(self, texts: list[str], *, add_special_tokens: bool = True, max_length: int | None = None):
        tok = self.tokenizer
        specials = tok.num_special_tokens_to_add(False) if add_special_tokens else 0
        if max_length is not None and max_length <= specials:
            raise GroveError(f"max length {max_length} leaves no room for text beside {specials} special tokens")
        # Truncation inside the library keeps the closing [SEP] when it cuts a long text.
        if max_length is not None:
            tok.enable_truncation(max_length)
        try:
            return [e.ids for e in tok.encode_batch(texts, add_special_tokens=add_special_tokens)]
        finally:
            tok.no_truncation()

    def decode(self, ids) -> str:
        return self.tokenizer.decode(_as_list(ids), skip_special_tokens=True)

    def _state(self) -> dict:
        return {"source": str(self.directory)}

    def _save_extra(self, directory: Path) -> None:
        for name in (HF_FILE, *HF_SIDE_FILES):
            if (self.directory / name).is_file() and self.directory.resolve() != directory.resolve():
                atomic_write(directory / name, (self.directory / name).read_bytes())

    @classmethod
    def _load(cls, directory: Path, state: dict) -> HFTokenizer:
        return cls(directory)


def load_tokenizer(directory) -> Tokenizer:
    """The tokenizer saved in `directory` by `Tokenizer.save`, or a Hugging Face tokenizer directory."""
    directory = Path(directory).expanduser()
    saved = directory / GROVE_FILE
    if not saved.is_file():
        if (directory / HF_FILE).is_file():
            return HFTokenizer(directory)
        raise GroveError(
            f"no tokenizer in {directory}: expected {GROVE_FILE} (saved by grove) "
            f"or {HF_FILE} (a Hugging Face tokenizer)"
        )
    state = _read_json(saved)
    try:
        return _from_state(directory, state)
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # fields missing or of the wrong type
        raise GroveError(f"{saved} is damaged ({type(err).__name__}: {err}); save the tokenizer again") from None


def _from_state(directory: Path, state: dict) -> Tokenizer:
    saved = directory / GROVE_FILE
    kind = state.get("kind")
    if kind == "char":
        return CharTokenizer(state["chars"], specials=state["specials"], lowercase=state["lowercase"])
    if kind == "word":
        return WordTokenizer(
            state["words"],
            eos=state["eos"],
            pad=state["pad"],
            lowercase=state["lowercase"],
            split_punctuation=state["split_punctuation"],
        )
    if kind == "bpe":
        return BPETokenizer._load(directory, state)
    if kind == "hf":
        return HFTokenizer._load(directory, state)
    raise GroveError(f"{saved} names an unknown tokenizer kind {kind!r}; expected char, word, bpe or hf")


def tokenizer_files(tokenizer: Tokenizer) -> dict[str, bytes]:
    """The files `tokenizer.save` writes, by name: what a run directory's data/ folder holds."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def _special_tokens(directory: Path) -> dict[str, str]:
    """pad_token, unk_token, cls_token ... as strings; special_tokens_map.json wins over the config."""
    found = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        for key, value in _read_json(directory / name).items():
            if key.endswith("_token"):
                value = value.get("content") if isinstance(value, dict) else value
                if isinstance(value, str):
                    found[key] = value
    return found


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GroveError(f"cannot read {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def _need(path: Path) -> Path:
    if not path.is_file():
        raise GroveError(f"{path} is missing: the tokenizer directory {path.parent} is incomplete")
    return path


def _as_list(ids) -> list[int]:
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)
