"""Recipes: YAML files parsed into typed config objects.

A recipe names its model and data set with `name:` and passes every other key in those two
sections to the registered builder, so their options are checked against the builder's
signature. Everything else is a fixed schema. Any mistake becomes one GroveError line that names
the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from grove.errors import GroveError, did_you_mean
from grove.registry import DATASETS, MODELS

RECIPE_DIR = Path(__file__).parent / "recipes"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(BaseModel):
    """`name` plus the registered model's own options."""

    model_config = ConfigDict(extra="allow")
    name: str
    # A state dict (.safetensors, .pt or .pth, e.g. a torchvision checkpoint) loaded before training.
    weights: str | None = None
    # Parameters kept as built or loaded: names or fnmatch patterns, e.g. "hf.bert.embeddings.*".
    freeze: list[str] = []

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(BaseModel):
    """`name`, the loader settings, plus the registered data set's own options."""

    model_config = ConfigDict(extra="allow")
    name: str
    # Global batch per optimiser step, split over processes and accumulation steps.
    batch_size: int = Field(64, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    num_workers: int = Field(0, ge=0)
    # Unreadable files are skipped and counted; strict stops the run at the first one instead.
    strict: bool = False

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # listing 4.1's SGD momentum
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(Section):
    name: Literal["constant", "cosine", "onecycle", "step"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)  # linear warmup, for constant and cosine
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine ends at lr * min_lr_ratio
    pct_start: float = Field(0.25, gt=0, lt=1)  # onecycle: share of steps spent rising
    step_epochs: int = Field(30, gt=0)  # step: multiply by gamma every step_epochs ...
    hold_epochs: int | None = Field(None, ge=0)  # ... after the first hold_epochs (default step_epochs)
    gamma: float = Field(0.1, gt=0, le=1)


class TrainConfig(Section):
    epochs: int = Field(10, gt=0)
    max_steps: int | None = Field(None, gt=0)  # stop early after this many optimiser steps
    grad_accum: int = Field(1, gt=0)
    clip_grad_norm: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # auto picks per device from measurements (benchmarks/RESULTS.md); the summary says which.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: Literal["auto", True, False] = "auto"
    channels_last: Literal["auto", True, False] = "auto"
    keep_freed_memory: Literal["auto", True, False] = "auto"  # auto: on CPU (glibc malloc keeps freed memory)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    early_stopping_patience: int | None = Field(None, gt=0)  # evaluations without a better val metric
    eval_every: int | None = Field(None, gt=0)  # steps between evaluations; one also ends every epoch
    seed: int = 0
    deterministic: bool = True
    nan_policy: Literal["stop", "skip"] = "stop"
    log_every: int = Field(50, gt=0)  # steps between host syncs for logging
    checkpoint_every: int | None = Field(None, gt=0)  # steps; a checkpoint also ends every epoch
    device: str = "auto"  # auto, cpu, cuda or cuda:N


class PrivacyConfig(Section):
    """Differentially private training (DP-SGD): on when `epsilon` or `noise_multiplier` is set."""

    # The target epsilon at `delta`: the noise is chosen so the last step reaches it. With a
    # noise_multiplier too, it is a budget that stops training when the next step would pass it.
    epsilon: float | None = Field(None, gt=0)
    noise_multiplier: float | None = Field(None, gt=0)
    delta: float | None = Field(None, gt=0, lt=1)  # default: a power of ten below 1/(10 x training examples)
    max_grad_norm: float = Field(1.0, gt=0)  # each example's gradient is clipped to this L2 norm
    accountant: Literal["rdp", "prv"] = "rdp"

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None


class RunConfig(Section):
    dir: str = "runs"
    name: str | None = None  # defaults to the recipe's name


class Recipe(Section):
    description: str = ""
    task: Literal["classification", "lm", "ctc"] = "classification"
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPE_DIR.glob("*.yaml"))}


def recipe_description(path: Path) -> str:
    return str((yaml.safe_load(path.read_text()) or {}).get("description", ""))


def resolve_recipe_path(name_or_path: str) -> Path:
    recipes = builtin_recipes()
    if name_or_path in recipes:
        return recipes[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise GroveError(f"recipe {path} is a directory; pass a YAML file or a built-in recipe name")
        if not path.is_file():
            raise GroveError(f"recipe file {path} does not exist")
        return path
    raise GroveError(
        f"no recipe named '{name_or_path}'{did_you_mean(name_or_path, recipes)}; "
        "`grove recipes` lists them, or pass the path of a YAML file"
    )


def load_recipe(name_or_path: str, overrides: list[str] = ()) -> tuple[Recipe, str]:
    """The validated recipe and its name (file stem), with `key.sub=value` overrides applied."""
    path = resolve_recipe_path(name_or_path)
    raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    return validate(raw), path.stem


def read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except (UnicodeDecodeError, ValueError):
        raise GroveError(f"recipe {path} is not a text file; a recipe is a YAML file (`grove recipes` lists the built-in ones)") from None
    except OSError as err:
        raise GroveError(f"recipe {path} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise GroveError(f"recipe {path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise GroveError(f"recipe {path} must be a mapping of sections (model:, data:, train: ...)")
    return raw


def apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise GroveError(f"override '{item}' must look like key.sub=value, e.g. train.epochs=5")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise GroveError(f"override '{item}': '{part}' is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        node[leaf] = value


def validate(raw: dict) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        # A misspelt key also makes the key it meant "missing": name the misspelling first.
        errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise GroveError(_describe(errors[0], raw)) from None
    recipe.model.__pydantic_extra__.update(_check_options("model", recipe.model.name, recipe.model.options(), MODELS))
    recipe.data.__pydantic_extra__.update(_check_options("data", recipe.data.name, recipe.data.options(), DATASETS))
    return recipe


def _check_options(section: str, name: str, options: dict, registry) -> dict:
    """The options checked by name and by type against the builder's signature, before anything
    is built; returns them as the builder's annotations read them (e.g. a list as a tuple)."""
    entry = registry.get(name) if name in registry else None
    if entry is None:
        raise GroveError(
            f"recipe key '{section}.name': unknown {registry.kind} '{name}'"
            f"{did_you_mean(name, registry.names())}; `{registry.list_command}` lists them"
        )
    checked = {}
    for key, value in options.items():
        if not entry.accepts(key):
            known = [k for k in entry.parameters() if k not in _ENGINE_OPTIONS] + _fixed_keys(section)
            raise GroveError(
                f"unknown recipe key '{section}.{key}'{did_you_mean(key, known)}; "
                f"{registry.kind} '{name}' takes: {', '.join(sorted(known))}"
            )
        expected = entry.option_type(key)
        if expected is None:
            checked[key] = value
            continue
        try:
            checked[key] = TypeAdapter(expected).validate_python(value)
        except ValidationError as err:
            first = err.errors()[0]
            inner = "".join(f".{p}" for p in first["loc"] if isinstance(p, str) and not p.startswith(("function", "union")))
            raise GroveError(
                f"recipe key '{section}.{key}{inner}': {first['msg'].lower()} (got {value!r}); "
                f"{registry.kind} '{name}' takes {key}: {_type_name(expected)}"
            ) from None
        except PydanticSchemaGenerationError:  # an annotation pydantic cannot check: leave it to the builder
            checked[key] = value
    return checked


# Builder options the engine sets when it rebuilds a trained run's data (engine/build.py build_split).
_ENGINE_OPTIONS = ("splits", "saved_dir")


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _fixed_keys(section: str) -> list[str]:
    cls = ModelConfig if section == "model" else DataConfig
    return list(cls.model_fields)


def _describe(error: dict, raw: dict) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        parent = Recipe
        for part in loc[:-1]:
            field = parent.model_fields.get(part)
            parent = field.annotation if field is not None else None
            if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
                break
        known = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        return f"unknown recipe key '{key}'{did_you_mean(loc[-1], known)}"
    if error["type"] == "missing":
        return f"recipe key '{key}' is required"
    value = error.get("input")
    return f"recipe key '{key}': {error['msg'][0].lower()}{error['msg'][1:]} (got {value!r})"
