"""The run directory: the one thing training writes and every later command reads.

    runs/<recipe>/<timestamp>/
      config.yaml        the resolved recipe (what `--resume` continues)
      meta.json          RunMeta: task, model name and options, classes, data meta (enough to predict)
      metrics.jsonl      one JSON record per log interval and per evaluation
      tensorboard/       TensorBoard event files
      checkpoints/step-N/{model.safetensors, state.pt}
      checkpoints/last, checkpoints/best -> step-N   (symlinks, switched atomically)
      plots/*.png        loss/accuracy curves, confusion matrix
      data/              files the data set needs later (a tokenizer ...)
      skipped_files.txt  unreadable data files that were skipped, one path a line (when any were)
      summary.json       written when the run ends: final metrics, speed settings, timings
      eval_<split>.json  `grove evaluate`'s figures (also written by `grove report`)
      explanations/      `grove explain`'s pictures and attribution arrays
      report.html        `grove report`'s page (plots/reliability_<split>.png beside the others)
      audit.json         `grove audit`'s membership-inference figures

model.safetensors holds the weights to use (the EMA weights when EMA is on); state.pt holds
everything else needed to resume: optimiser, scheduler, scaler, raw weights under EMA, RNG states
(and a private run's noise generator), data position and step. Every file is written to a temporary name and renamed into place, and a
checkpoint directory is complete before `last` points at it, so a killed process never leaves a
half-written checkpoint behind.

Every read goes through this module and turns a missing, corrupt or tampered file into one
GroveError line that names it: YAML is read with the safe loader, tensors with safetensors, and
state.pt with torch's weights-only unpickler, so no file in a run directory can run code.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from grove.errors import GroveError
from grove.files import atomic_write

if TYPE_CHECKING:
    from grove.config import Recipe
    from grove.tasks import Task

CONFIG, META, METRICS, SUMMARY = "config.yaml", "meta.json", "metrics.jsonl", "summary.json"
WEIGHTS, STATE, SKIPPED = "model.safetensors", "state.pt", "skipped_files.txt"
SCHEMA_VERSION = 2  # of meta.json; 1 had no task_options (and no schema_version)
# What a weights-only unpickler, safetensors or a damaged file raise: all "cannot be read".
UNREADABLE = (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError)


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: str
    options: dict
    converted: list[str] = []  # applied after building, in order (grove.privacy.apply_conversions)


class RunMeta(BaseModel):
    """meta.json: what later commands need to rebuild the model, task and preprocessing."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    schema_version: int = 1
    grove_version: str
    recipe: str
    task: str
    task_options: dict = {}
    model: ModelRef
    classes: list[str]
    data: dict  # the data set's meta: modality, transform, tokenizer facts ...

    @property
    def modality(self) -> str:
        return self.data.get("modality", "")


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots"
        self.tensorboard = self.path / "tensorboard"

    @classmethod
    def create(cls, base: str | Path, name: str) -> "RunDir":
        parent = Path(base) / name
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = parent / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise GroveError(f"cannot create a new run directory under {parent}")

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(path)
        if not run.path.is_dir():
            state = "is a file, not a folder" if run.path.exists() else "does not exist"
            raise GroveError(f"run directory {path} {state}; pass runs/<recipe>/<timestamp>")
        missing = [name for name in (CONFIG, META) if not (run.path / name).is_file()]
        if len(missing) == 2:
            raise GroveError(f"{path} is not a grove run directory (no {CONFIG} and {META}); pass runs/<recipe>/<timestamp>")
        if missing:
            raise GroveError(f"run file {run.path / missing[0]} is missing: the run directory is damaged")
        return run

    # -- small files ---------------------------------------------------------------------------
    def write_json(self, name: str, obj) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2))

    def read_json(self, name: str):
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GroveError(f"run file {path} cannot be read ({_first_line(err)}): the run directory is damaged") from None

    def write_meta(self, meta: RunMeta) -> None:
        self.write_json(META, meta.model_dump())

    def read_meta(self) -> RunMeta:
        raw = self.read_json(META)
        try:
            meta = RunMeta.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise GroveError(f"run file {self.path / META} is damaged: '{where}' {first['msg'].lower()}") from None
        if meta.schema_version > SCHEMA_VERSION:
            raise GroveError(f"run file {self.path / META} was written by a newer grove (schema {meta.schema_version}); upgrade grove")
        return meta

    def read_recipe(self) -> Recipe:
        """config.yaml, validated as a recipe."""
        from grove.config import validate

        raw = self.read_config()
        try:
            return validate(raw)
        except GroveError as err:
            raise GroveError(f"run file {self.path / CONFIG} is damaged: {err}") from None

    def write_config(self, config: dict) -> None:
        atomic_write(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict:
        path = self.path / CONFIG
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise GroveError(f"run file {path} cannot be read ({_first_line(err)}): the run directory is damaged") from None
        if not isinstance(raw, dict):
            raise GroveError(f"run file {path} is not a recipe mapping: the run directory is damaged")
        return raw

    def write_skipped(self, paths) -> None:
        if paths:
            atomic_write(self.path / SKIPPED, "".join(f"{p}\n" for p in sorted(paths)))

    def write_data_files(self, files: dict) -> None:
        (self.path / "data").mkdir(exist_ok=True)
        for name, content in files.items():
            atomic_write(self.path / "data" / name, content)

    # -- metrics ------------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.exists():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GroveError(f"run file {path} cannot be read ({_first_line(err)}): the run directory is damaged") from None

    def truncate_metrics(self, n_records: int) -> None:
        """Forget records written after the checkpoint being resumed (they will be written again)."""
        records = self.read_metrics()[:n_records]
        atomic_write(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, step: int, weights: dict, state: dict, tags: list[str]) -> Path:
        self.checkpoints.mkdir(exist_ok=True)
        final = self.checkpoints / f"step-{step:08d}"
        tmp = self.checkpoints / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(weights, tmp / WEIGHTS)
        torch.save(state, tmp / STATE)
        if final.exists():  # left by a run killed before `last` moved to it: same step, same content
            shutil.rmtree(final)
        os.replace(tmp, final)
        for tag in tags:
            link = self.checkpoints / tag
            tmp_link = self.checkpoints / f".{tag}.tmp-{os.getpid()}"
            if tmp_link.is_symlink():
                tmp_link.unlink()
            os.symlink(final.name, tmp_link)
            os.replace(tmp_link, link)
        self._prune()
        return final

    def checkpoint(self, tag: str) -> Path | None:
        link = self.checkpoints / tag
        return link.resolve() if link.exists() else None

    def load_checkpoint(self, tag: str, with_state: bool = True) -> tuple[dict, dict | None]:
        path = self.checkpoint(tag)
        if path is None:
            if any(self.checkpoints.glob("step-*")):
                raise GroveError(f"{self.checkpoints / tag} is missing or broken although checkpoints exist: "
                                 f"the run directory is damaged (point {tag} at one of its step-* folders)")
            raise GroveError(f"{self.path} has no '{tag}' checkpoint yet (the run stopped before its first one)")
        weights = read_weights(path / WEIGHTS, "checkpoint file")
        state = read_torch_file(path / STATE, "checkpoint file", "delete that checkpoint to fall back to an older one") if with_state else None
        return weights, state

    def _prune(self) -> None:
        keep = {p.name for p in (self.checkpoint("last"), self.checkpoint("best")) if p is not None}
        for old in self.checkpoints.glob("step-*"):
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def read_weights(path: Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict; anything else (a pickle renamed, a truncated file) is one line."""
    try:
        return load_file(path)
    except UNREADABLE as err:
        raise GroveError(f"{what} {path} is not a readable safetensors file ({_first_line(err)})") from None


def read_torch_file(path: Path, what: str, advice: str):
    """A torch.save file through the weights-only unpickler: tensors and plain containers only."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise GroveError(f"{what} {path} holds objects other than tensors, which grove never unpickles; {advice}") from None
    # Junk bytes fail inside torch's legacy loader with any exception (KeyError, IndexError ...);
    # all of them mean this file is unusable, not that grove has a bug.
    except Exception as err:
        raise GroveError(f"{what} {path} cannot be read ({_first_line(err)}); {advice}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


# -- a trained run, rebuilt from its directory alone ---------------------------------------------
@dataclass
class LoadedRun:
    """What `load_run` rebuilds: every later command (evaluate, predict, generate ...) starts here."""

    dir: RunDir
    meta: RunMeta
    recipe: Recipe  # the resolved recipe the run trained with
    model: torch.nn.Module  # eval mode, on `device`, weights of `checkpoint`
    task: Task
    transform: Callable  # (batch, train) -> model input, as during training's evaluation
    tokenizer: Any | None  # text runs
    device: torch.device
    checkpoint: str

    @property
    def classes(self) -> list[str]:
        return self.meta.classes


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "auto") -> LoadedRun:
    """Model, task, preprocessing and class names of a run, from its directory alone."""
    from grove.device import pick_device
    from grove.models.utils import load_weights
    from grove.privacy import apply_conversions
    from grove.registry import MODELS
    from grove.tasks import create_task

    run = RunDir.open(run_dir)
    meta = run.read_meta()
    recipe = run.read_recipe()
    torch_device = pick_device(device, key="--device")
    try:
        model = MODELS.create(meta.model.name, **meta.model.options)
    except (TypeError, ValueError) as err:
        raise GroveError(f"run file {run.path / META} names a model that cannot be built ({_first_line(err)})") from None
    apply_conversions(model, meta.model.converted)
    weights, _ = run.load_checkpoint(checkpoint, with_state=False)
    try:
        load_weights(model, weights)
    except ValueError as err:
        raise GroveError(f"checkpoint '{checkpoint}' of {run.path} does not fit the model in {META} ({_first_line(err)})") from None
    task = create_task(meta.task, meta.classes, meta.data, meta.task_options)
    transform, tokenizer = _preprocessing(meta, run.path / "data")
    _check_fit(run, meta, model, tokenizer)
    return LoadedRun(run, meta, recipe, model.to(torch_device).eval(), task, transform, tokenizer, torch_device, checkpoint)


def _check_fit(run: RunDir, meta: RunMeta, model: torch.nn.Module, tokenizer) -> None:
    """The run's files must describe the model they sit beside: a tampered or swapped file gives
    other labels or token ids without any error."""
    if meta.task == "classification" and len(meta.classes) != model.num_classes:
        raise GroveError(f"run file {run.path / META} names {len(meta.classes)} classes but the model has "
                         f"{model.num_classes} outputs: the run directory is damaged")
    if meta.task == "lm" and tokenizer is not None and tokenizer.vocab_size != model.num_classes:
        raise GroveError(f"the tokenizer in {run.path / 'data'} has {tokenizer.vocab_size} tokens but the model "
                         f"{model.num_classes}: the run directory is damaged")


def _preprocessing(meta: RunMeta, data_dir: Path) -> tuple[Callable, Any | None]:
    """The batch transform and tokenizer a run's model was trained behind."""
    if meta.modality == "image":
        from grove.data.image import ImageTransform

        return ImageTransform.from_dict(meta.data["transform"]), None
    if meta.modality == "audio":
        from grove.data.audio import AudioTransform

        return AudioTransform.from_dict(meta.data["transform"]), None
    from grove.data.tokenizers import load_tokenizer

    return _identity, load_tokenizer(data_dir)


def _identity(x, train: bool):
    return x
