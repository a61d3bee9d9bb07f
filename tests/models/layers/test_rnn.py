import numpy as np
import pytest
import torch
from torch import nn

from grove.models.layers.rnn import rnn_export_decompositions, run_rnn
from grove.registry import create_model

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
LENGTHS = [9, 3, 1, 6, 9]  # a full row, a one-step row, and padding of every other size


def make_rnn(cell, n_layers, bidirectional, **kw):
    torch.manual_seed(0)
    return CELLS[cell](5, 7, n_layers, batch_first=True, bidirectional=bidirectional, **kw)


def padded_batch(lengths, features=5):
    torch.manual_seed(1)
    x = torch.randn(len(lengths), max(lengths), features)
    # junk (not zeros) in the padding: the export path must keep it out, not merely see it small
    for row, n in enumerate(lengths):
        x[row, n:] = 100.0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_export_path_matches_packing(cell, n_layers, bidirectional):
    rnn = make_rnn(cell, n_layers, bidirectional, dropout=0.5 if n_layers > 1 else 0.0).eval()
    x, lengths = padded_batch(LENGTHS)
    with torch.no_grad():
        packed_out, packed_h = run_rnn(rnn, x, lengths, exporting=False)
        out, h = run_rnn(rnn, x, lengths, exporting=True)
    dirs = 2 if bidirectional else 1
    assert out.shape == packed_out.shape == (len(LENGTHS), max(LENGTHS), dirs * 7)
    assert h.shape == packed_h.shape == (n_layers * dirs, len(LENGTHS), 7)
    torch.testing.assert_close(out, packed_out, atol=1e-6, rtol=0)  # padding: zeros in both
    torch.testing.assert_close(h, packed_h, atol=1e-6, rtol=0)
    for row, n in enumerate(LENGTHS):
        assert (out[row, n:] == 0).all()


def test_without_lengths_it_is_the_module_itself():
    rnn = make_rnn("lstm", 2, True).eval()
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        out, (h, _) = rnn(x)
        for exporting in (False, True):
            got_out, got_h = run_rnn(rnn, x, None, exporting=exporting)
            assert torch.equal(got_out, out) and torch.equal(got_h, h)


def test_export_path_trains_the_modules_own_parameters():
    rnn = make_rnn("gru", 2, True, dropout=0.3).train()
    keys = list(rnn.state_dict())
    x, lengths = padded_batch(LENGTHS)
    out, h = run_rnn(rnn, x, lengths, exporting=True)
    (out.square().mean() + h.square().mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rnn.parameters())
    assert list(rnn.state_dict()) == keys


def test_the_path_follows_torch_compiler_is_exporting(monkeypatch):
    rnn = make_rnn("lstm", 1, True).eval()
    x, lengths = padded_batch(LENGTHS)
    calls = []
    real = torch._VF.lstm
    # a packed call is lstm(data, batch_sizes, (h, c), ...); a padded one lstm(x, (h, c), ...)
    monkeypatch.setattr(torch._VF, "lstm", lambda *a: calls.append(isinstance(a[1], tuple)) or real(*a))
    with torch.no_grad():
        run_rnn(rnn, x, lengths)
        assert calls == [False]  # eager: one packed call
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        run_rnn(rnn, x, lengths)
    assert calls == [False, True, True]  # exporting: one padded call per direction


def test_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="batch-first"):
        run_rnn(nn.LSTM(5, 7), torch.randn(4, 3, 5), None)
    rnn = nn.LSTM(5, 7, batch_first=True, proj_size=3)
    with pytest.raises(ValueError, match="proj_size"):
        run_rnn(rnn, torch.randn(2, 4, 5), torch.tensor([4, 2]), exporting=True)


# --- the models that use it, exported ----------------------------------------------------------
# Each export traces the recurrence as a while_loop several times (~1.5 s each on two cores), so
# these stay few: both cells, one and two layers, each once; the export path's numerics are
# checked above for every combination.


def rnn_classifier(cell, layers):
    return create_model("rnn_classifier", vocab_size=50, n_embd=16, n_hidden=16, n_layers=layers, cell=cell)


def conv_rnn_ctc(cell, layers):
    return create_model("conv_rnn_ctc", num_classes=6, in_features=16, channels=4, hidden=16, layers=layers, cell=cell)


def token_batch(batch, tokens):
    """(B, T) ids with padding (pad_id 0) after all but the first row."""
    idx = torch.randint(1, 50, (batch, tokens))
    for row in range(1, batch):
        idx[row, torch.randint(1, tokens, ()) :] = 0
    return (idx,)


def feature_batch(batch, frames):
    lengths = torch.randint(1, frames + 1, (batch,))
    lengths[0] = frames
    return torch.randn(batch, 16, frames), lengths


MODELS = {"rnn_classifier": (rnn_classifier, token_batch), "conv_rnn_ctc": (conv_rnn_ctc, feature_batch)}


def dynamic_shapes(model, n_inputs, dim=torch.export.Dim):
    dims = {}  # one Dim per axis name, so "batch" is the same across inputs
    return tuple(
        {axis: dims.setdefault(name, dim(name)) for axis, name in spec.dynamic_axes.items()}
        for spec in model.input_spec()[:n_inputs]
    )


def flat(outputs):
    return [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("name", list(MODELS))
def test_models_give_the_same_outputs_on_the_export_path(monkeypatch, name, cell):
    build, batch_of = MODELS[name]
    torch.manual_seed(0)
    model = build(cell, 2).eval()
    inputs = batch_of(4, 20)
    with torch.no_grad():
        eager = flat(model(*inputs))
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        exporting = flat(model(*inputs))
    for got, expected in zip(exporting, eager):
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.e2e
@pytest.mark.parametrize("name,cell,layers", [("rnn_classifier", "gru", 2), ("conv_rnn_ctc", "lstm", 1)])
def test_onnx_export_with_padding_matches_eager(tmp_path, name, cell, layers):
    import onnxruntime as ort

    build, batch_of = MODELS[name]
    torch.manual_seed(0)
    model = build(cell, layers).eval()
    example = batch_of(3, 12)
    with rnn_export_decompositions():
        program = torch.onnx.export(model, example, dynamic_shapes=dynamic_shapes(model, len(example)), dynamo=True)
    program.save(str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch, steps in [(2, 7), (5, 40)]:
        inputs = batch_of(batch, steps)
        with torch.no_grad():
            expected = flat(model(*inputs))
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)


@pytest.mark.e2e
def test_torch_export_keeps_the_time_axis_dynamic(tmp_path):
    torch.manual_seed(0)
    model = rnn_classifier("lstm", 2).eval()
    shapes = dynamic_shapes(model, 1, dim=lambda name: torch.export.Dim.DYNAMIC)
    with rnn_export_decompositions():
        program = torch.export.export(model, token_batch(3, 12), dynamic_shapes=shapes)
    torch.export.save(program, str(tmp_path / "model.pt2"))
    loaded = torch.export.load(str(tmp_path / "model.pt2")).module()
    for batch, tokens in [(2, 7), (5, 40)]:
        (idx,) = token_batch(batch, tokens)
        with torch.no_grad():
            torch.testing.assert_close(loaded(idx), model(idx), atol=1e-5, rtol=0)
