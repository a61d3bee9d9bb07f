"""int8 graphs (grove/export/quantize.py): what gets quantised, what stays float, how close the
int8 graph stays to fp32, and how failures read.

Each graph is a small model trained for a few steps on a synthetic task (so its predictions have
margins, as a trained model's do), behind the preprocessing an export puts in the graph, inside
a wrapper whose `.model` is the trained model, exported with the dynamo exporter.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.export import Dim

ort = pytest.importorskip("onnxruntime")

from grove.data.audio.features import AudioTransform  # noqa: E402
from grove.errors import GroveError  # noqa: E402
from grove.export.quantize import int8_mode, quantize, quantized_ops  # noqa: E402

SAMPLES = 4000  # 0.25 s at 16 kHz: 26 feature frames


class Wrapper(nn.Module):
    """As the export wrappers: preprocessing, then the trained model as `.model`."""

    def __init__(self, model: nn.Module, transform):
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, x):
        return self.model(self.transform(x))


class Normalise(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.45, 0.4]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))

    def forward(self, x):
        return (x.float() / 255 - self.mean) / self.std


class AudioFrontEnd:
    """grove's log-mel front end (STFT, mel matmul, log, per-utterance normalisation), as an
    export runs it: a callable, not a submodule of the wrapper."""

    def __init__(self, transform: AudioTransform):
        self.transform = transform

    def __call__(self, wave):
        return self.transform(wave, False)


class SmallCNN(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.features(x))


class SelfAttention(nn.Module):
    """Pre-norm self-attention with fused q/k/v, as grove's MultiHeadAttention."""

    def __init__(self, dim=64, heads=4):
        super().__init__()
        self.heads = heads
        self.ln = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return x + self.proj(nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))


class TextModel(nn.Module):
    """Embedding -> self-attention -> LSTM -> mean -> MLP -> Linear: Linears on (B, T, C) (MatMul in
    the graph) and on (B, C) (Gemm in the graph)."""

    def __init__(self, vocab=64, dim=64, classes=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.attn = SelfAttention(dim)
        self.rnn = nn.LSTM(dim, dim, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, 2 * dim), nn.ReLU())
        self.head = nn.Linear(2 * dim, classes)

    def forward(self, ids):
        h, _ = self.rnn(self.attn(self.emb(ids)))
        return self.head(self.mlp(h.mean(1)))


class KWSModel(nn.Module):
    def __init__(self, n_mels=40, classes=4):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.conv(x).mean(-1))


# --- synthetic tasks: inputs as a deployment feeds them, and their labels ---------------------


def images(rng, n):
    """Smooth uint8 images; the label is the brightest quadrant."""
    base = rng.uniform(20, 200, (n, 1, 2, 2))
    x = np.kron(base, np.ones((1, 3, 8, 8))) + rng.normal(0, 20, (n, 3, 16, 16))
    return np.clip(x, 0, 255).astype(np.uint8), base.reshape(n, 4).argmax(1)


def token_ids(rng, n, t=12):
    """Token ids; the label is which of four id ranges holds the most tokens."""
    ids = rng.integers(0, 64, (n, t))
    ids[:, : t // 2] = rng.integers(0, 16, (n, 1)) + 16 * rng.integers(0, 4, (n, t // 2))  # noise ...
    ids[:, t // 2 :] = 16 * rng.integers(0, 4, (n, 1)) + rng.integers(0, 16, (n, t - t // 2))  # ... and signal
    return ids.astype(np.int64), ids[:, t // 2 :].max(1) // 16


def waves(rng, n):
    """Noisy tones at one of four pitches, in [-1, 1]; the label is the pitch."""
    labels = rng.integers(0, 4, n)
    t = np.arange(SAMPLES) / 16000
    freq = np.array([300.0, 700.0, 1500.0, 3000.0])[labels][:, None] * rng.uniform(0.95, 1.05, (n, 1))
    x = rng.uniform(0.05, 0.5, (n, 1)) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (n, 1)))
    return (x + rng.normal(0, 0.02, x.shape)).astype(np.float32), labels


def fit(wrapper, data, steps=60, lr=3e-3):
    rng = np.random.default_rng(1)
    opt = torch.optim.Adam(wrapper.model.parameters(), lr)
    wrapper.train()
    for _ in range(steps):
        x, y = data(rng, 32)
        loss = nn.functional.cross_entropy(wrapper(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return wrapper.eval()


def export(wrapper, example, dynamic, path, input_name):
    program = torch.onnx.export(
        wrapper, (torch.from_numpy(example),), dynamic_shapes=(dynamic,), dynamo=True,
        input_names=[input_name], output_names=["logits"], verbose=False,
    )
    program.save(str(path))
    return path


GRAPHS = {  # name: (model, preprocessing, data, input name, dynamic axes)
    "cnn": (SmallCNN, Normalise, images, "image", {0: "batch"}),
    "text": (TextModel, nn.Identity, token_ids, "input_ids", {0: "batch", 1: "tokens"}),
    "audio": (KWSModel, lambda: AudioFrontEnd(AudioTransform()), waves, "audio", {0: "batch"}),
}
EXAMPLE_TOKENS = 3  # torch.export unrolls the LSTM over the example's tokens: a short one exports fast


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """graphs(name) -> (fp32 path, input name, data function), trained and exported once a module."""
    root, made = tmp_path_factory.mktemp("int8"), {}

    def get(name):
        if name not in made:
            model, transform, data, input_name, axes = GRAPHS[name]
            torch.manual_seed(0)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny models: more threads only wait on each other
            try:
                wrapper = fit(Wrapper(model(), transform()), data)
                example = data(np.random.default_rng(0), 2)[0]
                example = example[:, :EXAMPLE_TOKENS] if name == "text" else example
                dynamic = {axis: Dim(f"{name}_{label}") for axis, label in axes.items()}
                path = export(wrapper, example, dynamic, root / f"{name}.onnx", input_name)
            finally:
                torch.set_num_threads(threads)
            made[name] = (path, input_name, data)
        return made[name]

    return get


def run(path, feed):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def close_to_fp32(fp32, int8, input_name, data, n=256):
    x, labels = data(np.random.default_rng(7), n)
    ref, got = run(fp32, {input_name: x}), run(int8, {input_name: x})
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    assert (ref.argmax(1) == labels).mean() > 0.8, "the fp32 model did not learn its task: the test says nothing"
    assert agreement >= 0.95, agreement
    assert np.abs(ref - got).max() <= 0.15 * (ref.max() - ref.min()), np.abs(ref - got).max()


def calibration(input_name, data, batches=16, batch=8):
    rng = np.random.default_rng(3)
    return [{input_name: data(rng, batch)[0]} for _ in range(batches)]


def op_types(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def ort_optimised_ops(path, tmp_path) -> set[str]:
    """The op types ONNX Runtime actually runs, after its graph optimisations (QDQ fusion)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return op_types(tmp_path / "optimised.onnx")


def assert_float(graph: onnx.ModelProto, op_type: str, feeds_float=True) -> list[onnx.NodeProto]:
    """The `op_type` nodes (there is one at least), none reading a DequantizeLinear output, nor
    (with `feeds_float`) feeding a QuantizeLinear."""
    producer = {o: n.op_type for n in graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    nodes = [n for n in graph.node if n.op_type == op_type]
    assert nodes, f"no {op_type} left"
    for node in nodes:
        assert all(producer.get(i) != "DequantizeLinear" for i in node.input), (node.name, "reads int8")
        if feeds_float:
            assert all("QuantizeLinear" not in consumers.get(o, []) for o in node.output), (node.name, "feeds int8")
    return nodes


# --- which mode ------------------------------------------------------------------------------


def test_int8_mode_by_where_the_work_is():
    class SeedCNN(nn.Module):  # most weights in the classifier, most multiply-adds in the convs
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1))
            self.fc = nn.Linear(64 * 24 * 24, 128)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))

    class ViT(nn.Module):  # a patch convolution in front of attention
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 64, 8, stride=8)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 256, batch_first=True), 2)

        def forward(self, x):
            return self.enc(self.patch(x).flatten(2).transpose(1, 2))

    assert int8_mode(SmallCNN()) == "static"
    assert int8_mode(SeedCNN()) == "static"
    assert int8_mode(SeedCNN(), (torch.zeros(1, 3, 24, 24),)) == "static"
    assert int8_mode(TextModel()) == "dynamic"
    assert int8_mode(nn.Sequential(nn.Embedding(1000, 64), nn.Linear(64, 4))) == "dynamic"
    assert int8_mode(ViT()) == "dynamic"
    assert int8_mode(ViT(), (torch.zeros(1, 3, 32, 32),)) == "dynamic"
    assert int8_mode(Wrapper(KWSModel(), nn.Identity())) == "static"


# --- dynamic ---------------------------------------------------------------------------------


def test_dynamic_quantises_matmuls_gemms_and_lstm(graphs, tmp_path):
    fp32, input_name, data = graphs("text")
    out = tmp_path / "model.int8.onnx"
    quantize(fp32, out, "dynamic")
    ops = op_types(out)
    assert {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM"} <= ops
    assert "LSTM" not in ops
    # attention's q/k/v and output Linears (MatMul in the graph) and the MLP's two (Gemm in the
    # graph, rewritten to reach dynamic quantisation); the head over 4 classes stays float
    assert quantized_ops(out) == {"MatMul": 4, "LSTM": 1}
    graph = onnx.load(str(out)).graph
    constants = {i.name for i in graph.initializer}
    float_linears = [n for n in graph.node if n.op_type in ("Gemm", "MatMul") and n.input[1] in constants]
    assert len(float_linears) == 1  # the head (as MatMul + Add: ORT's dynamic quantiser rewrites every Gemm)
    assert out.stat().st_size < 0.5 * fp32.stat().st_size
    assert "DynamicQuantizeMatMul" in ort_optimised_ops(out, tmp_path)  # ORT's fused int8 kernel
    close_to_fp32(fp32, out, input_name, data)
    x = data(np.random.default_rng(5), 3)[0][:, :5]  # another batch size and length: the axes stay dynamic
    assert run(out, {input_name: x}).shape == (3, 4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


# --- static ----------------------------------------------------------------------------------


def test_static_cnn_quantises_the_model_and_not_the_normalisation(graphs, tmp_path):
    fp32, input_name, data = graphs("cnn")
    out = tmp_path / "model.int8.onnx"
    quantize(fp32, out, "static", calibration(input_name, data))
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(out)
    assert quantized_ops(out) == {"Conv": 3}  # the head over 4 classes stays float
    assert "QLinearConv" in ort_optimised_ops(out, tmp_path)
    graph = onnx.load(str(out)).graph
    first = [n for n in graph.node if input_name in n.input]
    assert [n.op_type for n in first] == ["Cast"]  # the uint8 image goes to the float normalisation
    # the normalisation runs in float; its result is the first convolution's (quantised) input
    for op in ("Cast", "Div", "Sub"):
        assert_float(graph, op, feeds_float=False)
    close_to_fp32(fp32, out, input_name, data)


@pytest.mark.e2e  # a third export: ~10 s
def test_static_audio_keeps_the_front_end_float(graphs, tmp_path):
    fp32, input_name, data = graphs("audio")
    out = tmp_path / "model.int8.onnx"
    quantize(fp32, out, "static", calibration(input_name, data))
    assert quantized_ops(out) == {"Conv": 2}
    graph = onnx.load(str(out)).graph
    assert_float(graph, "STFT"), assert_float(graph, "Log")
    (mel,) = assert_float(graph, "MatMul")  # the mel filterbank: the only MatMul, in float
    assert "QLinearConv" in ort_optimised_ops(out, tmp_path)
    close_to_fp32(fp32, out, input_name, data)


@pytest.mark.e2e
def test_without_scope_metadata_the_front_end_still_stays_float(graphs, tmp_path):
    fp32, input_name, data = graphs("audio")
    bare = onnx.load(str(fp32))
    for node in bare.graph.node:
        del node.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    out = tmp_path / "model.int8.onnx"
    quantize(tmp_path / "bare.onnx", out, "static", calibration(input_name, data, batches=4))
    graph = onnx.load(str(out)).graph
    assert_float(graph, "STFT"), assert_float(graph, "Log"), assert_float(graph, "MatMul")
    assert quantized_ops(out) == {"Conv": 2}


# --- failures --------------------------------------------------------------------------------


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)
    return message


def test_failures_are_one_line_and_leave_nothing(graphs, tmp_path):
    fp32, input_name, data = graphs("cnn")
    out = tmp_path / "model.int8.onnx"
    out.write_bytes(b"the previous int8 graph")

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(fp32.read_bytes()[: fp32.stat().st_size // 3])
    with pytest.raises(GroveError) as err:
        quantize(corrupt, out, "dynamic")
    assert "int8 failed" in one_line(err)

    with pytest.raises(GroveError) as err:
        quantize(fp32, out, "static")
    assert "calibration" in one_line(err)
    with pytest.raises(GroveError) as err:
        quantize(fp32, out, "static", [])
    assert "calibration" in one_line(err)
    with pytest.raises(GroveError) as err:
        quantize(fp32, out, "static", [{"pixels": data(np.random.default_rng(0), 2)[0]}])
    assert "pixels" in one_line(err) and input_name in str(err.value)
    with pytest.raises(GroveError) as err:  # ORT's own failure: a feed of the wrong dtype
        quantize(fp32, out, "static", [{input_name: data(np.random.default_rng(0), 2)[0].astype(np.float32)}])
    assert one_line(err).startswith("int8 failed")
    with pytest.raises(GroveError):
        quantize(fp32, out, "fp4")
    with pytest.raises(GroveError) as err:  # an output folder that cannot be one
        quantize(fp32, corrupt / "model.int8.onnx", "dynamic")
    assert "cannot write" in one_line(err)

    assert out.read_bytes() == b"the previous int8 graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.onnx", "model.int8.onnx"]


def test_missing_onnxruntime_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(GroveError, match=r"pip install grove\[deploy\]"):
        quantize(tmp_path / "model.onnx", tmp_path / "model.int8.onnx", "dynamic")
