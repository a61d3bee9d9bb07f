"""Image classifiers. Importing a module runs its @register_model decorators."""

from grove.models.vision import fastnet, resnet, seed_cnn  # noqa: F401
