"""Recipe (or run directory) to objects: data, task, model, optimiser, schedule."""

from __future__ import annotations

import fnmatch
import math
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from grove.config import Recipe
from grove.data.base import DataBundle
from grove.errors import GroveError
from grove.models.utils import load_weights
from grove.registry import DATASETS, MODELS, create_model
from grove.rundir import RunDir, RunMeta, read_torch_file, read_weights


def build_data(data_cfg) -> DataBundle:
    return DATASETS.create(data_cfg.name, **data_cfg.options())


def check_settings(recipe: Recipe, device: torch.device, world_size: int) -> None:
    """Settings that cannot work together, refused before any data is read or model built."""
    d, t = recipe.data, recipe.train
    if d.batch_size % (world_size * t.grad_accum):
        raise GroveError(
            f"data.batch_size={d.batch_size} must divide evenly into {world_size} process(es) "
            f"x train.grad_accum={t.grad_accum} micro-batches"
        )
    if t.precision == "fp16" and device.type != "cuda":
        raise GroveError("train.precision=fp16 needs a CUDA GPU; use bf16 (or fp32) on CPU")


def build_split(data_cfg, split: str | None, run: RunDir, meta: RunMeta) -> tuple[str, object]:
    """One split of a trained run's data set, behind the preprocessing the run saved.

    `split` None is the test split, or val where there is none. Builders that take `splits`
    build only the ones asked for, builders that take `classes` map labels to the run's class ids,
    and builders that take `saved_dir` reuse the files in the run's data/ folder (a fitted
    tokenizer) instead of fitting them again. Either way the classes and the files the data set
    gives must equal the run's: a tokenizer refitted on changed data would silently give other
    token ids.
    """
    entry = DATASETS.get(data_cfg.name)
    options = data_cfg.options()
    if entry.accepts("saved_dir"):
        options["saved_dir"] = str(run.path / "data")
    if entry.accepts("classes") and meta.classes:
        options["classes"] = list(meta.classes)
    if entry.accepts("splits"):
        options["splits"] = [split] if split else ["test", "val"]
    bundle = DATASETS.create(data_cfg.name, **options)
    if split is None:  # the test split, or val for data sets without one
        split = "test" if bundle.test is not None else "val"
    data = getattr(bundle, split, None) if split in ("train", "val", "test") else None
    if data is None:
        others = [name for name in ("test", "val", "train") if name != split]
        raise GroveError(f"data set '{data_cfg.name}' has no '{split}' split; try --split {' or --split '.join(others)}")
    if bundle.classes != meta.classes:
        raise GroveError(f"the data set now has the classes {bundle.classes[:10]}, the run was trained on "
                         f"{meta.classes[:10]}: evaluate on the data the run trained with")
    for name, content in bundle.files.items():
        saved = run.path / "data" / name
        fresh = content.encode() if isinstance(content, str) else content
        if not saved.is_file() or saved.read_bytes() != fresh:
            raise GroveError(f"the data set now gives another {name} than {saved} saved at training time "
                             "(its files changed?): evaluate on the data the run trained with")
    return split, data


def task_options(recipe: Recipe, bundle: DataBundle) -> dict:
    """What the task needs beyond classes and data meta; saved in meta.json for later commands."""
    if recipe.task == "lm":
        return {"stateful": bool(getattr(bundle.train, "sequential", False))}
    if recipe.task == "classification":
        return {"label_smoothing": recipe.train.label_smoothing}
    return {}


def model_options(recipe: Recipe, bundle: DataBundle) -> dict:
    """The data's defaults (classes, channels, size) that the model takes, under the recipe's own."""
    entry = MODELS.get(recipe.model.name)
    defaults = {k: v for k, v in bundle.model_defaults.items() if entry.accepts(k)}
    return {**defaults, **recipe.model.options()}


def build_model(name: str, options: dict) -> nn.Module:
    try:
        with warnings.catch_warnings():  # torch warns about a checkpoint's pickle protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return create_model(name, **options)
    except (TypeError, ValueError) as err:
        raise GroveError(f"model '{name}' cannot be built with {options}: {err}") from None
    except pickle.UnpicklingError:  # e.g. a Hugging Face pytorch_model.bin that is not plain tensors
        where = f" {options['path']}" if "path" in options else ""
        raise GroveError(f"model '{name}': its checkpoint{where} holds objects other than tensors, which grove "
                         "never unpickles; use a checkpoint saved as safetensors or plain tensors") from None
    except OSError as err:
        raise GroveError(f"model '{name}' cannot read its checkpoint: {str(err).splitlines()[0]}") from None


def load_pretrained(model: nn.Module, path: str) -> None:
    """A state dict file (.safetensors, or a torch .pt/.pth such as torchvision's) into the model."""
    file = Path(path)
    if not file.is_file():
        raise GroveError(f"model.weights: {path} does not exist")
    if file.suffix == ".safetensors":
        weights = read_weights(file, "model.weights:")
    else:
        weights = read_torch_file(file, "model.weights:", "save a state dict (torch.save(model.state_dict())) or a .safetensors file")
        if not isinstance(weights, dict):
            raise GroveError(f"model.weights: {path} holds a {type(weights).__name__}, not a state dict")
        weights = weights.get("state_dict", weights.get("model", weights))
    head, own = _head_names(model), model.state_dict()
    resized = sorted(k for k in head if k in weights and weights[k].shape != own[k].shape)
    if resized:  # a checkpoint trained for another class count: its body, and the model's fresh head
        print(f"model.weights: {path} has a head of {weights[resized[0]].shape[0]} outputs; "
              f"it is replaced by a fresh one for {model.num_classes} classes")
        weights = {**weights, **{k: own[k] for k in head}}
    try:
        load_weights(model, weights)
    except (ValueError, RuntimeError) as err:
        raise GroveError(f"model.weights: {path} does not fit model: {str(err).splitlines()[0]}") from None


def freeze(model: nn.Module, patterns: list[str]) -> None:
    """Parameters whose names match a pattern (fnmatch) stop training; each pattern must match one."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise GroveError(f"model.freeze: '{pattern}' matches no parameter of the model; its names look like "
                             f"{', '.join(names[:3])} ..., and a pattern such as '{names[0].split('.')[0]}.*' "
                             "matches a whole part")
    for name, param in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            param.requires_grad_(False)
    if patterns and not any(p.requires_grad for p in model.parameters()):
        raise GroveError(f"model.freeze {patterns} freezes every parameter: nothing would train; freeze a part")


def _head_names(model: nn.Module) -> set[str]:
    """State-dict names of the output layer: the ones `reset_classifier` replaces."""
    before = {name: id(t) for name, t in model.state_dict(keep_vars=True).items()}
    try:
        with torch.random.fork_rng(devices=[]):  # finding the head must not move the run's random stream
            model.reset_classifier(model.num_classes)
    except ValueError:  # language models: their output is the vocabulary, not a head
        return set()
    return {name for name, t in model.state_dict(keep_vars=True).items() if before.get(name) != id(t)}


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    # Decay matrices and kernels only: decaying norms' scales and biases only hurts (timm, nanoGPT).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # torch's CPU default is a Python loop of small ops per tensor; the fused kernels do one pass
    # per tensor: shakespeare-char-gpt's AdamW step ~2.9 -> ~0.5 ms, seed_cnn's SGD step 87 -> 42 us
    # on a 2-core CPU.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if cfg.name == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


def lr_factor(cfg, total_steps: int, steps_per_epoch: int):
    """The schedule as a pure function of the step, so resuming needs only the step."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if cfg.name == "onecycle":
            rise = max(1, round(cfg.pct_start * total_steps))
            if step < rise:
                return 0.04 + 0.96 * step / rise  # from lr/25, as torch's OneCycleLR
            t = (step - rise) / max(1, total_steps - rise)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if step < warmup:
            return (step + 1) / warmup
        if cfg.name == "cosine":
            t = (step - warmup) / max(1, total_steps - warmup)
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if cfg.name == "step":
            epoch = step // steps_per_epoch
            hold = cfg.step_epochs if cfg.hold_epochs is None else cfg.hold_epochs
            return cfg.gamma ** (0 if epoch < hold else (epoch - hold) // cfg.step_epochs + 1)
        return 1.0

    return factor
