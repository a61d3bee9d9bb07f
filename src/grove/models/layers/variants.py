"""Registering a model family's fixed configurations, each under its own name.

    register_variants(
        {"resnet18": (resnet_builder(BasicBlock, (2, 2, 2, 2)), "ResNet-18 (11.7M params ...)"), ...},
        modality="image", family="cnn",
    )

A family's builder function (one per configuration, made by the model file's own factory) takes
the options the whole family shares, so their names, annotations and defaults are written once;
each is registered under its name, with its summary as the docstring `grove models` shows.
"""

from __future__ import annotations

from collections.abc import Callable

from grove.registry import register_model


def register_variants(variants: dict[str, tuple[Callable, str]], **tags) -> dict[str, Callable]:
    """Registers each builder of {name: (builder, summary)} as model `name`; returns {name: builder}."""
    registered = {}
    for name, (build, summary) in variants.items():
        build.__name__ = build.__qualname__ = name
        build.__doc__ = summary
        registered[name] = register_model(build, **tags)
    return registered
