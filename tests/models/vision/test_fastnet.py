import pytest
import torch

from grove.registry import create_model

SMALL = dict(widths=(8, 16, 16))


def correlated_images(n=32, size=16, channels=3):
    """Images whose neighbouring pixels and channels are correlated, with a non-zero mean."""
    torch.manual_seed(0)
    x = torch.randn(n, channels, size + 1, size + 1)
    x = (x[..., 1:, 1:] + x[..., :-1, :-1] + 0.5 * x[..., 1:, :-1]) / 2  # spatial correlation
    mix = torch.tensor([[1.0, 0.6, 0.3], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])[:channels, :channels]
    return torch.einsum("dc,nchw->ndhw", mix, x) * 2.0 + 0.7  # channel correlation, scale, shift


def test_init_from_data_whitens_the_stem_output():
    model = create_model("fastnet", image_size=16, **SMALL)
    x = correlated_images()
    model.init_from_data(x)
    with torch.no_grad():
        out = model.whiten(x)  # pre-activation, (N, 24, 15, 15)
    d = out.shape[1] // 2
    flat = out.transpose(0, 1).flatten(1)  # (24, N*15*15)
    positive = flat[:d]
    cov = torch.cov(positive)
    assert torch.allclose(cov, torch.eye(d), atol=0.01)
    assert positive.mean(1).abs().max() < 1e-4  # centred, despite the data's offset
    assert torch.allclose(flat[d:], -positive, atol=1e-6)

    raw = torch.cov(torch.nn.functional.unfold(x, 2).transpose(1, 2).flatten(0, 1).T)
    assert (raw - torch.diag(raw.diag())).abs().max() > 0.5  # the data really was correlated


def test_whitening_weight_is_frozen_and_the_rest_trains():
    model = create_model("fastnet", **SMALL)
    assert not model.whiten.weight.requires_grad
    assert model.whiten.bias.requires_grad and model.head.weight.requires_grad
    model(model.example_input(2)).sum().backward()
    assert model.whiten.weight.grad is None


def test_eval_tta_is_the_mean_of_both_flips():
    model = create_model("fastnet", num_classes=7, **SMALL)
    model.train()
    model(model.example_input(8))  # non-trivial running stats
    model.eval()
    x = model.example_input(4)
    with torch.no_grad():
        tta = model(x)
        model.tta = False
        manual = (model(x) + model(x.flip(-1))) / 2
    assert tta.shape == (4, 7)
    assert torch.allclose(tta, manual, atol=1e-6)


def test_training_mode_is_a_single_pass():
    model = create_model("fastnet", **SMALL).train()
    batch_sizes = []
    model.head.register_forward_hook(lambda m, inp, out: batch_sizes.append(len(inp[0])))
    x = model.example_input(4)
    out = model(x)
    assert batch_sizes == [4]
    model.tta = False
    assert torch.allclose(out, model(x))


def test_too_small_image_is_a_clear_error():
    with pytest.raises(ValueError, match="image_size >= 9"):
        create_model("fastnet", image_size=8)
