"""Every registered model honours the contract in grove/models/__init__.py."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from grove.models import estimate_flops
from grove.registry import create_model, list_models

NUM_CLASSES = 7
# small options so the whole file stays fast; models not listed build with their defaults
TEST_OPTIONS = {
    "resnet18": dict(image_size=32),
    "resnet34": dict(image_size=32),
    "resnet50": dict(image_size=32),
    "fastnet": dict(widths=(8, 16, 16)),
    "seed_cnn": dict(image_size=16),
}


def build(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, **TEST_OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name, tmp_path):
    model = build(name)
    assert model.num_classes == NUM_CLASSES
    if hasattr(model, "init_from_data"):
        model.init_from_data(model.example_input(8))

    model.train()
    out = model(model.example_input(2))
    assert out.shape[0] == 2 and out.shape[-1] == NUM_CLASSES
    out.float().square().mean().backward()
    for param_name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{param_name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{param_name} has a non-finite gradient"

    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = build(name)
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    model.eval()
    fresh.eval()
    x = model.example_input(2)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))

    assert estimate_flops(model) > 0
