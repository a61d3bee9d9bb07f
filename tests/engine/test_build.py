"""Building a run's pieces: pretrained weights, with their head replaced when the class count differs."""

import pytest
import torch
from safetensors.torch import save_file

from grove.engine.build import load_pretrained
from grove.errors import GroveError
from grove.models.utils import weights_of
from grove.registry import create_model


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_for_another_class_count_keep_the_body_and_replace_the_head(tmp_path, suffix, capsys):
    torch.manual_seed(0)
    source = create_model("seed_cnn", num_classes=100, in_channels=1, image_size=8)
    path = tmp_path / f"c100{suffix}"
    save_file(weights_of(source), path) if suffix == ".safetensors" else torch.save(source.state_dict(), path)
    model = create_model("seed_cnn", num_classes=10, in_channels=1, image_size=8)
    load_pretrained(model, str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight) and torch.equal(model.fc1.weight, source.fc1.weight)
    assert model.fc2.weight.shape == (10, 128) and model.num_classes == 10
    assert "head of 100 outputs" in capsys.readouterr().out


def test_weights_whose_body_differs_are_one_line_naming_the_tensor(tmp_path):
    save_file(weights_of(create_model("seed_cnn", in_channels=1, image_size=8)), tmp_path / "w.safetensors")
    with pytest.raises(GroveError, match=r"fc1.weight is \(128, 256\) in the weights but \(128, 1024\)"):
        load_pretrained(create_model("seed_cnn", in_channels=1, image_size=16), str(tmp_path / "w.safetensors"))


def test_loading_weights_leaves_the_random_stream_alone(tmp_path):
    save_file(weights_of(create_model("seed_cnn", in_channels=1, image_size=8)), tmp_path / "w.safetensors")
    model = create_model("seed_cnn", in_channels=1, image_size=8)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    load_pretrained(model, str(tmp_path / "w.safetensors"))
    assert torch.equal(torch.rand(3), expected)


def test_frozen_parameters_keep_their_values_through_training(tmp_path):
    from grove.config import load_recipe
    from grove.engine.loop import train
    from grove.rundir import load_run

    recipe, name = load_recipe("digits-cnn", [f"run.dir={tmp_path}", "train.max_steps=3", "train.precision=fp32",
                                              'model.freeze=["conv*"]'])
    torch.manual_seed(0)
    fresh = create_model("seed_cnn", num_classes=10, in_channels=1, image_size=8)
    model = load_run(train(recipe, name)["run"]).model
    assert torch.equal(model.conv1.weight, fresh.conv1.weight) and torch.equal(model.conv2.bias, fresh.conv2.bias)
    assert not torch.equal(model.fc1.weight, fresh.fc1.weight)


def test_a_freeze_pattern_that_matches_nothing_is_one_line():
    from grove.engine.build import freeze

    with pytest.raises(GroveError, match=r"model.freeze: 'encoder.\*' matches no parameter.*conv1.weight"):
        freeze(create_model("seed_cnn", in_channels=1, image_size=8), ["encoder.*"])


def test_freezing_every_parameter_is_one_line():
    from grove.engine.build import freeze

    with pytest.raises(GroveError, match="freezes every parameter"):
        freeze(create_model("seed_cnn", in_channels=1, image_size=8), ["*"])
