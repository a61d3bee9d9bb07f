"""Text models: language models and sequence classifiers. Importing a module runs its @register_model decorators."""

from grove.models.text import encoder, gpt, hf, rnn_classifier, rnn_lm  # noqa: F401
