"""The built-in catalogue: every module that registers models or data sets with `@register_model`
/ `@register_dataset`. The registry imports this module, and nothing else of grove, the first time
a name is looked up, so a new built-in is one line here and importing grove stays cheap."""

from grove.data import image  # noqa: F401  digits, cifar10, image_folder
from grove.data import audio  # noqa: F401  audio_folder, speech_commands, audio_manifest, librispeech
from grove.data import spoken_words  # noqa: F401  spoken_words, spoken_digit_sequences
from grove.data import text  # noqa: F401  ptb, wikitext2, tiny_shakespeare, text_classification, sst2, sentiment_demo
from grove.models.speech import ctc, kws  # noqa: F401
from grove.models.text import encoder, gpt, hf, rnn_classifier, rnn_lm  # noqa: F401
from grove.models.vision import alexnet, fastnet, resnet, seed_cnn, vgg, vit  # noqa: F401
