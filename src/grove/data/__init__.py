"""Data sets, registered by name (grove/catalogue.py lists the modules). Nothing here imports models or the engine.

    base        DataBundle (what a builder returns), TensorData, WindowData, StreamData, MODALITIES
    loader      BatchLoader: sharded, resumable batches; unreadable files skipped and listed
    folders     class-folder layouts shared by image_folder and audio_folder
    download    fetch (checksummed downloads) and all-or-nothing archive extraction
    image       digits, cifar10, image_folder; ImageTransform
    audio/      audio_folder, speech_commands, audio_manifest, librispeech; AudioTransform
    espeak      speech synthesis with espeak-ng, for spoken_words
    spoken_words  spoken_words, spoken_digit_sequences (offline speech)
    text/       ptb, wikitext2, tiny_shakespeare, text_classification, sst2, sentiment_demo
    tokenizers  char, word, bpe and Hugging Face tokenizers
"""

__all__ = ["MODALITIES", "DataBundle", "TensorData"]


def __getattr__(name: str):
    # Imported on first use: the torch-free runtime reads tokenizers from this package, and
    # base imports torch.
    if name in __all__:
        from grove.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'grove.data' has no attribute {name!r}")
