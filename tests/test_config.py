"""Recipes: loading, overrides, and one clear line for every kind of mistake."""

import pytest

from grove.config import builtin_recipes, load_recipe, validate
from grove.errors import GroveError


def test_every_shipped_recipe_validates_and_names_its_launch_command():
    recipes = builtin_recipes()
    assert {"digits-cnn", "cifar10-cnn", "cifar10-resnet18", "cifar10-fast", "imagenet-resnet50"} <= set(recipes)
    for name, path in recipes.items():
        first = path.read_text().splitlines()[0]
        assert first.startswith("# grove train ") and name in first, path
        recipe, stem = load_recipe(name)
        assert stem == name and recipe.description


def test_overrides_set_nested_keys_with_yaml_types():
    recipe, _ = load_recipe("digits-cnn", ["train.epochs=3", "optim.name=adamw", "model.dropout=0.25", "train.max_steps=7"])
    assert recipe.train.epochs == 3 and recipe.optim.name == "adamw"
    assert recipe.model.options() == {"dropout": 0.25} and recipe.train.max_steps == 7


def test_a_user_yaml_file_works(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: seed_cnn}\ndata: {name: digits}\ntrain: {epochs: 1}\n")
    recipe, name = load_recipe(str(path))
    assert name == "mine" and recipe.train.epochs == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epoch=3"], "unknown recipe key 'train.epoch' (did you mean 'epochs'?)"),
        (["trian.epochs=3"], "unknown recipe key 'trian' (did you mean 'train'?)"),
        (["train.epochs=ten"], "recipe key 'train.epochs': input should be a valid integer"),
        (["train.epochs=0"], "recipe key 'train.epochs': input should be greater than 0"),
        (["optim.name=adam"], "recipe key 'optim.name': input should be 'sgd' or 'adamw'"),
        (["model.name=resnet19"], "unknown model 'resnet19' (did you mean 'resnet18'?)"),
        (["model.dropuot=0.1"], "unknown recipe key 'model.dropuot' (did you mean 'dropout'?)"),
        (["data.name=digit"], "unknown dataset 'digit' (did you mean 'digits'?)"),
        (["data.val_fractoin=0.2"], "unknown recipe key 'data.val_fractoin' (did you mean 'val_fraction'?)"),
        (["epochs"], "override 'epochs' must look like key.sub=value"),
        (["train.precision=fp8"], "recipe key 'train.precision'"),
    ],
)
def test_mistakes_give_one_line_naming_the_key(overrides, message):
    with pytest.raises(GroveError) as err:
        load_recipe("digits-cnn", overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(GroveError, match="no recipe named 'digits-cn' \\(did you mean 'digits-cnn'\\?\\)"):
        load_recipe("digits-cn")
    with pytest.raises(GroveError, match="does not exist"):
        load_recipe(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: seed_cnn\ndata: [\n")
    with pytest.raises(GroveError, match="not valid YAML at line"):
        load_recipe(str(bad))
    with pytest.raises(GroveError, match="recipe key 'data' is required"):
        validate({"model": {"name": "seed_cnn"}})
