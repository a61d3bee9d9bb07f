"""Checks of model options that several models share."""

from __future__ import annotations

from collections.abc import Collection


def check_choice(option: str, value, choices: Collection[str]) -> None:
    """Raises ValueError naming the choices (a tuple, or a dict's keys) unless value is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {option} '{value}'; choose one of {', '.join(choices)}")
