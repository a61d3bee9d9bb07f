"""The run directory: the one thing training writes and every later command reads.

    runs/<recipe>/<timestamp>/
      config.yaml        the resolved recipe (what `--resume` continues)
      meta.json          task, model name and options, classes, data meta (enough to predict)
      metrics.jsonl      one JSON record per log interval and per evaluation
      tensorboard/       TensorBoard event files
      checkpoints/step-N/{model.safetensors, state.pt}
      checkpoints/last, checkpoints/best -> step-N   (symlinks, switched atomically)
      plots/*.png        loss/accuracy curves, confusion matrix
      data/              files the data set needs later (a tokenizer ...)
      summary.json       written when the run ends: final metrics, speed settings, timings

model.safetensors holds the weights to use (the EMA weights when EMA is on); state.pt holds
everything else needed to resume: optimiser, scheduler, scaler, raw weights under EMA, RNG states,
data position and step. Every file is written to a temporary name and renamed into place, and a
checkpoint directory is complete before `last` points at it, so a killed process never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from grove.errors import GroveError

CONFIG, META, METRICS, SUMMARY = "config.yaml", "meta.json", "metrics.jsonl", "summary.json"
WEIGHTS, STATE = "model.safetensors", "state.pt"


def atomic_write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        if not (run.path / CONFIG).is_file() or not (run.path / META).is_file():
            raise GroveError(f"{path} is not a grove run directory (no {CONFIG} and {META}); pass runs/<recipe>/<timestamp>")
        return run

    # -- small files ---------------------------------------------------------------------------
    def write_json(self, name: str, obj) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2))

    def read_json(self, name: str):
        return json.loads((self.path / name).read_text())

    def write_config(self, config: dict) -> None:
        atomic_write(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict:
        return yaml.safe_load((self.path / CONFIG).read_text())

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
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

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
            raise GroveError(f"{self.path} has no '{tag}' checkpoint yet (the run stopped before its first one)")
        try:
            weights = load_file(path / WEIGHTS)
            state = torch.load(path / STATE, map_location="cpu", weights_only=True) if with_state else None
        except (SafetensorError, RuntimeError, OSError) as err:
            raise GroveError(f"checkpoint {path} cannot be read ({err}); delete it to fall back to an older one") from None
        return weights, state

    def _prune(self) -> None:
        keep = {p.name for p in (self.checkpoint("last"), self.checkpoint("best")) if p is not None}
        for old in self.checkpoints.glob("step-*"):
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
