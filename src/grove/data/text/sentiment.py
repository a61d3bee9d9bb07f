"""Generated product and movie reviews, positive or negative: text classification offline.

Sentences come from templates and word lists, deterministic for a seed. Val and test also use a
few words and phrasings train never shows, so they measure generalisation.
"""

from __future__ import annotations

import random

from grove.data.base import Split
from grove.data.text.classification import classification_bundle
from grove.errors import GroveError
from grove.registry import register_dataset


@register_dataset(modality="text")
def sentiment_demo(
    *,
    n_train: int = 4000,
    n_val: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
    tokenizer: str = "word",
    vocab_size: int = 8000,
    max_len: int = 64,
    lowercase: bool = True,
    splits: list[Split] | None = None,
    saved_dir: str | None = None,
    classes: list[str] | None = None,
):
    """Generated product and movie reviews, positive or negative: text classification with no download.

    Sentences come from templates and word lists and are deterministic for a seed, with equal
    numbers of each class per split. Negation ("not good", "never disappoints"), contrast
    ("..., but ...", "although ...") and neutral filler make the label depend on word order, so a
    bag of words falls well short of 100%; val and test use phrasings and a few adjectives train
    never shows, so they measure generalisation (a pretrained encoder knows those words).
    Labels are "0" (negative) and "1" (positive); `splits`, `saved_dir` and `classes` as for
    text_classification: each split is generated from its own seed, only when needed.
    """
    for option, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 2:
            raise GroveError(f"{option} must be at least 2 (one example per class), got {n}")

    def generator(split: str, n: int):
        return lambda: (f"sentiment_demo {split}", _generate_reviews(n, f"{seed}/{split}", held_out=split != "train"))

    sources = {split: generator(split, n) for split, n in (("train", n_train), ("val", n_val), ("test", n_test))}
    # Every split has both labels (n >= 2, half each), so they are known without generating train.
    return classification_bundle(
        "sentiment_demo", sources, tokenizer, vocab_size, max_len, lowercase, splits, saved_dir, classes or ["0", "1"]
    )


# Word lists: multi-word entries are comma-separated. Pairs are (train and eval, eval only): val
# and test also use a few words and phrasings train never shows.
_MOVIE = "movie, film, show, documentary, sequel, series, comedy, thriller".split(", ")
_MOVIE_PARTS = "plot, acting, script, soundtrack, ending, dialogue, cast, pacing, story, camera work".split(", ")
_PRODUCT = "phone, laptop, blender, camera, vacuum, kettle, keyboard, backpack, speaker, printer".split(", ")
_PRODUCT_PARTS = (
    "battery, screen, sound, design, price, build quality, customer service, delivery, manual, packaging".split(", ")
)
_POSITIVE = (
    "good great excellent wonderful fantastic amazing impressive enjoyable solid brilliant lovely perfect "
    "pleasant fun beautiful nice fine clever".split(),
    "superb terrific delightful".split(),
)
_NEGATIVE = (
    "bad terrible awful horrible poor boring disappointing dull weak mediocre annoying useless cheap sloppy "
    "frustrating ugly messy slow".split(),
    "dreadful lousy clumsy".split(),
)
_INTENSIFIERS = ["", "", "", "very", "really", "quite", "extremely", "truly", "incredibly", "pretty", "so"]
_MOVIE_FILLER = (
    [
        "We watched it on Saturday night.",
        "My brother recommended it to me.",
        "I saw it with my parents.",
        "I read a few reviews first.",
        "It was on television last week.",
    ],
    ["We went to the late showing.", "A friend lent me the disc."],
)
_PRODUCT_FILLER = (
    [
        "I bought it last month.",
        "I used it every day for two weeks.",
        "It arrived on a Tuesday.",
        "I read a few reviews first.",
        "It was a gift from a friend.",
    ],
    ["We picked it up at the store downtown.", "I ordered it online in March."],
)
_FAILED_EXPECTATION = (["I expected more", "I had high hopes", "I wanted to like it"], ["I was looking forward to it"])
_LOW_EXPECTATION = (["I expected very little", "I had low expectations"], ["I was not sure about it at first"])


def _generate_reviews(n: int, seed: str, held_out: bool) -> list:
    """n (text, label, index) rows, half "0" (negative) and half "1" (positive), shuffled."""
    rng = random.Random(f"sentiment_demo/{seed}")
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    return [(_review(rng, bool(label), held_out), str(label), i + 1) for i, label in enumerate(labels)]


def _review(rng: random.Random, positive: bool, held_out: bool) -> str:
    """One review whose overall sentiment is `positive`. held_out mixes in the eval-only words and
    phrasings (about a quarter of the choices); train never sees them."""

    def pick(pair):
        shared, extra = pair
        return rng.choice(extra) if held_out and rng.random() < 0.25 else rng.choice(shared)

    movie = rng.random() < 0.5
    thing = rng.choice(_MOVIE if movie else _PRODUCT)
    parts = rng.sample(_MOVIE_PARTS if movie else _PRODUCT_PARTS, 2)  # two different aspects at most

    def subject(about: str) -> str:
        """The reviewed thing as a whole, or one of its aspects ("part" or "other")."""
        if about == "whole":
            return rng.choice([f"the {thing}", f"this {thing}", "it"])
        return f"the {parts[about == 'other']}"

    def adjective(good: bool) -> str:
        return pick(_POSITIVE if good else _NEGATIVE)

    def clause(good: bool, about: str) -> str:
        """A clause saying `good` or not about the whole or an aspect, in one of several shapes."""
        be = rng.choice(["is", "was"])
        it = subject(about)
        shape = rng.randrange(5, 8) if held_out and rng.random() < 0.25 else rng.randrange(5)
        if shape in (4, 6) and about != "whole":  # these speak of the whole thing only
            shape = rng.randrange(4)
        if shape == 0:
            return f"{it} {be} {_join(rng.choice(_INTENSIFIERS), adjective(good))}"
        if shape == 1:  # negation of the other polarity: "not bad" is praise here
            if good:
                return f"{it} {be} not {adjective(False)}{rng.choice(['', ' at all'])}"
            return f"{it} {be} not {_join(rng.choice(['', 'very', 'really']), adjective(True))}"
        if shape == 2:
            return f"{it} {be} never {adjective(not good)}"
        if shape == 3:
            watching = "watching" if movie else "buying"
            verbs = ["loved", "enjoyed", "liked"] if good else ["hated", "disliked", f"regret {watching}"]
            return f"I {rng.choice(verbs)} {it}"
        if shape == 4:
            return f"I would {'' if good else 'not '}recommend {subject('whole')}"
        # Phrasings only val and test use.
        if shape == 5:
            return f"{it} {rng.choice(['seemed', 'felt'])} {_join(rng.choice(_INTENSIFIERS), adjective(good))}"
        if shape == 6:
            return f"I {'would' if good else 'would not'} {'watch' if movie else 'buy'} it again"
        return f"{it} {rng.choice(['did not', 'never'])} {'disappoint' if good else 'impress me'}"

    def sentence(good: bool) -> str:
        shape = rng.random()
        # In contrasts, the aside is about an aspect and the verdict usually about the whole.
        verdict = "whole" if rng.random() < 0.8 else "other"
        if shape < 0.35:
            text = clause(good, rng.choice(["whole", "whole", "part"]))
        elif shape < 0.55:  # the clause after "but" decides
            turn = rng.choice(["", "overall ", "in the end "] + (["honestly ", "still "] if held_out else []))
            text = f"{clause(not good, 'part')}, but {turn}{clause(good, verdict)}"
        elif shape < 0.67:
            text = f"although {clause(not good, 'part')}, {clause(good, verdict)}"
        elif shape < 0.77:  # the main clause decides, not the one after "even though"
            text = f"{clause(good, verdict)}, even though {clause(not good, 'part')}"
        elif shape < 0.87:
            text = f"{clause(good, 'part')} and {clause(good, rng.choice(['whole', 'other']))}"
        else:  # the reviewer found the opposite of what they expected
            expected = pick(_LOW_EXPECTATION if good else _FAILED_EXPECTATION)
            text = f"{expected}, but {clause(good, 'whole')}"
        return text[0].upper() + text[1:] + "."

    out = [sentence(positive)]
    if rng.random() < 0.4:
        out.insert(rng.randrange(2), pick(_MOVIE_FILLER if movie else _PRODUCT_FILLER))
    return " ".join(out)


def _join(*words: str) -> str:
    return " ".join(w for w in words if w)
