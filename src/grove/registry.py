"""One registry for everything grove builds by name: models and data sets.

    @register_model(modality="image", family="cnn")
    def resnet18(num_classes=10, ...): ...

    model = create_model("resnet18", num_classes=100)
"""

from __future__ import annotations

import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Callable

from grove.errors import GroveError, did_you_mean


@dataclass
class Entry:
    name: str
    fn: Callable
    tags: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return (inspect.getdoc(self.fn) or "").split("\n")[0]

    def parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.fn).parameters)

    def option_type(self, key: str):
        """The type an option must have: its annotation, else the type of a scalar default
        (a float default also takes ints), else None (anything goes)."""
        param = self.parameters().get(key)
        if param is None or param.kind is param.VAR_KEYWORD:
            return None
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception:  # an annotation that does not resolve outside its module: fall back to the default
            hints = {}
        if key in hints:
            return hints[key]
        default = param.default
        if isinstance(default, bool):
            return bool
        if isinstance(default, float):
            return float
        if isinstance(default, (int, str)):
            return type(default)
        return None

    def accepts(self, key: str) -> bool:
        params = self.parameters().values()
        return key in self.parameters() or any(p.kind is p.VAR_KEYWORD for p in params)


class Registry:
    def __init__(self, kind: str, list_command: str):
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, Entry] = {}

    def register(self, fn: Callable | None = None, *, name: str | None = None, **tags):
        def add(f: Callable) -> Callable:
            key = name or f.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = Entry(key, f, tags)
            return f

        return add(fn) if fn is not None else add

    def get(self, name: str) -> Entry:
        _import_builtins()
        if name not in self._entries:
            raise GroveError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; "
                f"`{self.list_command}` lists them"
            )
        return self._entries[name]

    def create(self, name: str, **kwargs):
        entry = self.get(name)
        for key in kwargs:
            if not entry.accepts(key):
                allowed = ", ".join(k for k in entry.parameters() if k != "self")
                raise GroveError(
                    f"{self.kind} '{name}' has no option '{key}'{did_you_mean(key, entry.parameters())}; "
                    f"its options are: {allowed}"
                )
        return entry.fn(**kwargs)

    def names(self) -> list[str]:
        _import_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _import_builtins()
        return name in self._entries


MODELS = Registry("model", "grove models")
DATASETS = Registry("dataset", "grove datasets")

register_model = MODELS.register
register_dataset = DATASETS.register


def create_model(name: str, **kwargs):
    return MODELS.create(name, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


def _import_builtins() -> None:
    """Importing the catalogue runs the built-ins' @register decorators (once: Python caches it)."""
    importlib.import_module("grove.catalogue")
