"""export.json: what an export folder holds and how to feed its graph. Torch-free.

    exports/<recipe>/            (grove export RUN --out DIR)
      model.onnx                 the graph, preprocessing inside (or model.pt2 for --format pt2)
      model.int8.onnx            with --int8: the quantised graph (the one the runtime runs)
      tokenizer/                 text: the run's tokenizer files, as `load_tokenizer` reads them
      export.json                this manifest

The graph's inputs and outputs, by task (every leading axis is the dynamic "batch"):
- classification, image: "image" uint8 (batch, C, S, S), decoded as training decoded images
  (shorter side resized bilinear to S, center-cropped; `preprocess.image`) -> "logits" (batch, K).
  The /255, the normalisation and the center crop to the model's size are in the graph.
- classification, audio: "audio" float32 (batch, clip_samples) in [-1, 1] at
  `preprocess.audio.sample_rate`, fitted to the clip length (zeros appended, or the loudest window)
  -> "logits". The log-mel/MFCC front end and its normalisation are in the graph.
- classification, text: "input_ids" int64 (batch, tokens), right-padded with `preprocess.text.pad_id`
  -> "logits".
- ctc: "audio" float32 (batch, samples) right-padded with zeros, "lengths" int64 (batch,) samples
  -> "log_probs" float32 (batch, frames, K) (log-softmax, blank = class 0), "output_lengths" int64.
- lm, `generation.kind == "kv_cache"` (gpt): "input_ids" (batch, tokens), "past_keys" and
  "past_values" float32 (n_layer, batch, n_head, past, head_dim) (past = 0 for a prompt) ->
  "logits" (batch, tokens, V), "present_keys", "present_values" (..., past + tokens, head_dim).
  past + tokens <= block_size; beyond it, the runtime recomputes the last block_size tokens.
- lm, `generation.kind == "rnn_state"` (lstm_lm): "input_ids", "state_h" (and for LSTM "state_c")
  float32 (n_layers, batch, hidden), zeros for a prompt -> "logits", "next_state_h" ("next_state_c").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from grove.errors import GroveError

MANIFEST = "export.json"
SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Tensor(_Strict):
    name: str
    shape: list[int | str]  # str entries are dynamic axes
    dtype: str


class ImagePre(_Strict):
    size: int  # the graph's input side: images are decoded to size x size
    channels: int  # 1 (grey) or 3 (RGB)
    resize: str = "shorter side to size (bilinear), center crop"
    mean: list[float]  # in the graph: (x / 255 - mean) / std, then a center crop to crop_size
    std: list[float]
    crop_size: int | None = None


class AudioPre(_Strict):
    sample_rate: int
    clip_samples: int | None  # keyword models: every clip fitted to this many samples; None: any length
    features: dict  # the front end inside the graph (n_mels, n_mfcc, window_ms, hop_ms), for the record


class TextPre(_Strict):
    tokenizer: str  # folder of tokenizer files, relative to the export folder
    pad_id: int | None = None
    max_len: int | None = None  # classification inputs are truncated to this many tokens


class Preprocess(_Strict):
    image: ImagePre | None = None
    audio: AudioPre | None = None
    text: TextPre | None = None


class Generation(_Strict):
    kind: Literal["kv_cache", "rnn_state"]
    block_size: int | None = None  # kv_cache: the longest context
    n_layer: int
    n_head: int | None = None
    head_dim: int | None = None
    hidden: int | None = None  # rnn_state
    cell: Literal["lstm", "gru"] | None = None


class Parity(_Strict):
    """Eager model against the exported graph on the run's own held-out inputs."""

    split: str  # where the inputs came from
    inputs: int
    batch_sizes: list[int]
    max_abs_diff: float  # over logits (log-probabilities for CTC), every valid position
    top1_agreement: float  # fraction of argmaxes (per input, per frame or per token) that agree


class Int8(_Strict):
    mode: Literal["dynamic", "static"]
    file: str
    calibration_inputs: int = 0  # static: training inputs the activation ranges were calibrated on
    parity: Parity | None = None  # against the eager fp32 model
    split: str  # where the metrics were measured
    before: dict  # metrics of the fp32 graph
    after: dict  # metrics of the int8 graph
    warnings: list[str] = []


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    grove_version: str
    recipe: str
    task: Literal["classification", "ctc", "lm"]
    modality: Literal["image", "audio", "text"]
    model: dict  # {"name", "options"}: what was exported, for the record
    checkpoint: str  # "best" or "last"; the step is in `step`
    step: int
    classes: list[str]  # labels (classification), the alphabet (ctc), [] (lm)
    format: Literal["onnx", "pt2"]
    file: str  # the fp32 graph, relative to the export folder
    sha256: dict[str, str] = {}  # graph file -> its SHA-256: a graph changed after export is refused
    opset: int | None = None
    inputs: list[Tensor]
    outputs: list[Tensor]
    preprocess: Preprocess
    generation: Generation | None = None
    parity: Parity
    int8: Int8 | None = None

    def runtime_file(self, int8: bool = False) -> str:
        """The graph to run: fp32, which answers as the run does, or the int8 one when asked for."""
        if int8 and self.int8 is None:
            raise GroveError("this export has no int8 graph: export again with --int8")
        return self.int8.file if int8 else self.file


def file_digest(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_digest(folder, manifest: Manifest, name: str) -> None:
    """The graph file `name` must be the one export wrote: a graph whose weights were changed still
    loads, and would give other answers without any error."""
    path = Path(folder) / name
    expected = manifest.sha256.get(name)
    if expected is not None and path.is_file() and file_digest(path) != expected:
        raise GroveError(f"{path} is not the graph export wrote (its SHA-256 differs from {MANIFEST}): export the run again")


def check_export_dir(path) -> None:
    """A folder holding an exported graph but no manifest is a damaged export, not a run."""
    folder = Path(path)
    if not (folder / MANIFEST).exists() and any((folder / name).is_file() for name in ("model.onnx", "model.pt2")):
        raise GroveError(f"{folder / MANIFEST} is missing: the export folder is damaged; export the run again")


def is_export_dir(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder) -> Manifest:
    """The manifest of an export folder; a missing, truncated or tampered file is one line."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise GroveError(f"{folder} is not a grove export folder (no {MANIFEST}); make one with `grove export RUN`")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GroveError(f"export file {path} cannot be read ({_first_line(err)}): export the run again") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(top level)"
        raise GroveError(f"export file {path} is damaged: '{where}' {first['msg'].lower()}; export the run again") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise GroveError(f"export file {path} was written by a newer grove (schema {manifest.schema_version}); upgrade grove")
    return manifest


def write_manifest(folder, manifest: Manifest) -> None:
    from grove.files import atomic_write

    atomic_write(Path(folder) / MANIFEST, json.dumps(manifest.model_dump(), indent=2) + "\n")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
