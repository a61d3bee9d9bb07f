"""What every registered data set builder promises: typed options, one modality spelling, and
splits whose items can say where they came from."""

import inspect
import typing

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from grove.config import builtin_recipes, load_recipe
from grove.data.base import MODALITIES, StreamData, TensorData, WindowData
from grove.data.loader import BatchLoader
from grove.errors import GroveError
from grove.registry import DATASETS

NAMES = DATASETS.names()


@pytest.mark.parametrize("name", NAMES)
def test_builders_have_precise_annotations_their_defaults_satisfy(name):
    entry = DATASETS.get(name)
    assert entry.tags["modality"] in MODALITIES
    hints = typing.get_type_hints(entry.fn)
    for param in entry.parameters().values():
        assert param.kind is param.KEYWORD_ONLY, f"{name}.{param.name} is not keyword-only"
        assert param.name in hints, f"{name}.{param.name} has no annotation"
        assert hints[param.name] is not typing.Any, f"{name}.{param.name} is annotated Any"
        if param.default is not inspect.Parameter.empty:
            TypeAdapter(hints[param.name]).validate_python(param.default)


@pytest.mark.parametrize("recipe", sorted(builtin_recipes()))
def test_shipped_recipes_data_options_fit_the_builder_annotations(recipe):
    loaded, _ = load_recipe(recipe)
    hints = typing.get_type_hints(DATASETS.get(loaded.data.name).fn)
    for key, value in loaded.data.options().items():
        TypeAdapter(hints[key]).validate_python(value)


def test_a_wrongly_typed_option_fails_against_the_annotation():
    hints = typing.get_type_hints(DATASETS.get("image_folder").fn)
    with pytest.raises(ValidationError):
        TypeAdapter(hints["channels"]).validate_python(2)
    with pytest.raises(ValidationError):
        TypeAdapter(hints["val_fraction"]).validate_python("a tenth")


def test_in_memory_splits_name_their_items():
    assert TensorData(torch.zeros(3, 1), torch.zeros(3), "digits train").path(2) == "digits train #2"
    windows = WindowData(torch.arange(20), block_size=4, stride=4, source="input.txt")
    assert windows.path(1) == "input.txt tokens 4-8"
    stream = StreamData(torch.arange(41), rows=4, bptt=5, source="ptb.train.txt")
    assert stream.path(1) == "ptb.train.txt steps 5-10 of 4 rows"
    from grove.data.image import digits

    bundle = digits()
    assert bundle.test.path(0) == "digits test #0"
    moved = bundle.train.to(torch.device("cpu"))
    assert moved.path(3) == "digits train #3"


class Files:
    """A file-backed split whose odd items are unreadable."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return None if i % 2 else (torch.zeros(2), 0)

    def path(self, i):
        return f"/data/file{i:02d}.wav"


def test_loader_lists_the_skipped_files_sorted_once():
    loader = BatchLoader(Files(9), 3, train=True, device=torch.device("cpu"), seed=0)
    for epoch in range(2):
        for _ in loader.epoch(epoch):
            pass
    assert loader.skipped_files == [f"/data/file{i:02d}.wav" for i in (1, 3, 5, 7)]
    assert loader.skipped == set(loader.skipped_files)


# What `grove evaluate` passes (grove.engine.build.build_split): splits always, saved_dir where a
# bundle has files to reuse, classes where label ids name classes.
CLASSIFICATION = {
    "digits", "cifar10", "image_folder", "audio_folder", "speech_commands", "spoken_words",
    "text_classification", "sst2", "sentiment_demo",
}
FITTED_ALPHABET = {"audio_manifest", "librispeech"}  # CTC sets whose classes are an alphabet fitted on train
SAVED_FILES = {"ptb", "wikitext2", "tiny_shakespeare", "text_classification", "sst2", "sentiment_demo"}


@pytest.mark.parametrize("name", NAMES)
def test_builders_take_the_options_evaluation_passes(name):
    entry = DATASETS.get(name)
    hints = typing.get_type_hints(entry.fn)
    assert entry.parameters()["splits"].default is None
    TypeAdapter(hints["splits"]).validate_python(["test", "val"])
    with pytest.raises(ValidationError):
        TypeAdapter(hints["splits"]).validate_python(["dev"])
    assert ("saved_dir" in entry.parameters()) == (name in SAVED_FILES)
    assert ("classes" in entry.parameters()) == (name in CLASSIFICATION | FITTED_ALPHABET)
    if name in CLASSIFICATION | FITTED_ALPHABET:
        TypeAdapter(hints["classes"]).validate_python(["b", "a"])


def test_unknown_splits_are_refused():
    from grove.data.image import digits

    with pytest.raises(GroveError, match="unknown split 'dev'; choose from train, val, test"):
        digits(splits=["dev"])
    with pytest.raises(GroveError, match="distinct"):
        digits(classes=["0", "0"])
