"""Transcribed utterances: transcripts as character ids, manifests, and the split types.

Transcription data use a character alphabet: index 0 is the CTC blank, 1 the space, then the
sorted characters of the training transcripts (lower-cased).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from grove.data.audio.io import header_length, read_audio
from grove.errors import GroveError

BLANK = "<blank>"


def normalize_transcript(text: str) -> str:
    """Lower case, runs of white space as one space."""
    return " ".join(str(text).lower().split())


def build_alphabet(transcripts) -> list[str]:
    """[BLANK, " ", sorted characters of the transcripts]; index 0 is reserved for CTC's blank."""
    chars = set()
    for text in transcripts:
        chars.update(normalize_transcript(text))
    chars.discard(" ")
    return [BLANK, " ", *sorted(chars)]


def encode_transcript(text: str, alphabet: list[str]) -> torch.Tensor:
    """Character ids (LongTensor); characters outside the alphabet are dropped."""
    index = {c: i for i, c in enumerate(alphabet) if i > 0}
    return torch.tensor([index[c] for c in normalize_transcript(text) if c in index], dtype=torch.long)


def decode_tokens(ids, alphabet: list[str]) -> str:
    """The text of character ids, blanks (0) skipped; no CTC repeat-collapsing."""
    return "".join(alphabet[int(i)] for i in ids if int(i) > 0)


def collate_transcription(items):
    """[(waveform (L,), tokens (S,)), ...] -> ({"audio": (B, Lmax), "lengths": (B,)},
    {"tokens": (B, Smax) padded with 0 (blank), "lengths": (B,)})."""
    waves = [torch.as_tensor(w) for w, _ in items]
    tokens = [torch.as_tensor(t, dtype=torch.long) for _, t in items]
    audio = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    padded = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=0)
    return (
        {"audio": audio, "lengths": torch.tensor([len(w) for w in waves])},
        {"tokens": padded, "lengths": torch.tensor([len(t) for t in tokens])},
    )


class TranscriptionFiles:
    """Utterances from files: item i is (float32 (L,), character ids (S,)), or None when the file
    cannot be read. `lengths` holds each file's length in samples (from its header, 0 when
    unreadable) for length bucketing; `collate` pads a batch."""

    collate = staticmethod(collate_transcription)

    def __init__(self, files: list[str], transcripts: list[str], alphabet: list[str], sample_rate: int):
        self.files = files
        self.transcripts = [normalize_transcript(t) for t in transcripts]
        self.tokens = [encode_transcript(t, alphabet) for t in self.transcripts]
        self.sample_rate = sample_rate
        self.lengths = torch.tensor([header_length(f, sample_rate) for f in files], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return read_audio(self.files[i], self.sample_rate), self.tokens[i]
        except GroveError:
            return None

    def path(self, i: int) -> str:
        return self.files[i]


class TranscriptionArrays:
    """Utterances held in memory as one int16 sample array: item i is (float32 (L,), character ids
    (S,)); `lengths`, `collate` and `path(i)` as for TranscriptionFiles. `names[i]` says where an
    utterance came from."""

    collate = staticmethod(collate_transcription)

    def __init__(
        self, samples: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor, tokens: list, names: list[str]
    ):
        self.samples = samples  # (N_total,) int16
        self.offsets = offsets
        self.lengths = lengths
        self.tokens = tokens
        self.names = names

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int):
        start = int(self.offsets[i])
        return self.samples[start : start + int(self.lengths[i])].float() / 32768, self.tokens[i]

    def path(self, i: int) -> str:
        return self.names[i]


def read_manifest(path: Path) -> tuple[list[str], list[str]]:
    """(audio paths, transcripts) from a CSV (header with path,transcript) or JSONL manifest;
    relative audio paths are relative to the manifest's folder."""
    if not path.is_file():
        raise GroveError(f"manifest {path} does not exist")
    base = path.parent
    rows = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise GroveError(
                    f"{path} line {number} is not JSON ({e.msg}); a JSONL manifest has one object per line"
                ) from None
            if not isinstance(row, dict) or not {"path", "transcript"} <= row.keys():
                raise GroveError(f'{path} line {number} lacks "path" or "transcript"; each line needs both keys')
            rows.append((row["path"], row["transcript"]))
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("path", "transcript") if c not in columns]
            if missing:
                raise GroveError(
                    f"{path} has no {' or '.join(missing)} column (its columns: {', '.join(columns) or 'none'}); "
                    "a CSV manifest needs a header with path,transcript"
                )
            for row in reader:
                row = {k.strip(): v for k, v in row.items() if k is not None}
                rows.append((row["path"], row["transcript"] or ""))
    if not rows:
        raise GroveError(f"manifest {path} lists no utterances")
    files = [str(p) if os.path.isabs(p) else str(base / p) for p, _ in rows]
    return files, [t for _, t in rows]


