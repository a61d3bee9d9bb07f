"""Text data sets: language-model corpora and text classification.

    corpora         ptb, wikitext2, tiny_shakespeare: token streams (StreamData or WindowData)
    classification  text_classification (your CSV/TSV/JSONL files), sst2; TextClassificationData
    sentiment       sentiment_demo: generated reviews, offline
    common          tokenizers named in a recipe, reading text

Every bundle carries its tokenizer in `files`, so `load_tokenizer(run_dir / "data")` restores the
exact vocabulary later commands (generate, predict, serve) need to turn text into ids and back.
"""

from grove.data.text.classification import TextClassificationData, sst2, text_classification
from grove.data.text.common import no_transform
from grove.data.text.corpora import ptb, tiny_shakespeare, wikitext2
from grove.data.text.sentiment import sentiment_demo

__all__ = [
    "TextClassificationData",
    "no_transform",
    "ptb",
    "sentiment_demo",
    "sst2",
    "text_classification",
    "tiny_shakespeare",
    "wikitext2",
]
