"""Image classifiers. Importing a module runs its @register_model decorators."""

from grove.models.vision import alexnet, fastnet, resnet, seed_cnn, vgg, vit  # noqa: F401
