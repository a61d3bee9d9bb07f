"""int8 graphs: model.onnx -> model.int8.onnx with ONNX Runtime's quantisation tools.

Two modes (`int8_mode` picks one per model):
- "dynamic" (Linear/LSTM/attention models): weights stored as int8, activations quantised on the
  fly per call. MatMul with a constant weight becomes MatMulInteger (fused by ORT into
  DynamicQuantizeMatMul), LSTM becomes DynamicQuantizeLSTM. The dynamo exporter writes a 2-D
  Linear as Gemm, which ORT's dynamic quantiser has no int8 kernel for (recent versions rewrite it
  to MatMul themselves, but under a new name that the list of nodes to quantise misses), so such
  Gemms are first rewritten here as MatMul + Add, keeping their names. Convolutions, GRUs, embeddings, the activation-by-activation products of
  attention and small Linears (a head over a few classes: `SMALL_WEIGHT`) stay float.
- "static" (CNNs): QDQ format, activation ranges calibrated (MinMax) on a few hundred training
  inputs; ORT fuses the QuantizeLinear/DequantizeLinear pairs around Conv/MatMul/Gemm/Add/pools
  into QLinearConv, QLinearMatMul, QLinearAdd ... Per-channel int8 weights, uint8 activations.

Both use `reduce_range` (7-bit weights): x86 CPUs without VNNI (AVX2 only, AVX-512 without
VNNI) multiply uint8 by int8 with `vpmaddubsw`, whose 16-bit pair sums saturate with full 8-bit
weights; 7 bits cannot overflow, and with per-channel scales the lost bit costs little accuracy.
A graph exported on one machine runs on others, so this is the setting that is right everywhere.

Only the trained model is quantised: export wrappers keep it as their `model` submodule, and the
dynamo exporter records every node's module path (metadata "pkg.torch.onnx.name_scopes"), so
nodes outside the "model" scope (the image /255 and normalisation, the audio STFT, mel matmul,
log and feature normalisation) stay float. A graph without that metadata falls back to a
structural rule: everything that feeds an STFT/DFT/Log node, and those nodes, stay float (what
comes after the log, such as an MFCC's DCT matmul, is then not told apart from the model).

Settings, measured with ORT 1.32 on an AVX2 CPU without VNNI (AMD EPYC, 1 and 2 threads): uint8
activations x int8 weights is the fast pair (int8 x int8 QDQ runs a CNN at ~1.1x fp32 there, uint8
x uint8 weights is ~10% slower); per-channel weights and reduce_range cost no measurable speed;
without reduce_range a MatMul's int8 result differs from exact integer arithmetic by up to 20% of
its output range, and per-tensor weights double a CNN's error. Rough speed-ups there: 1.3-1.6x for
a 4x256 Transformer encoder (its attention, LayerNorm and GELU stay float), 1.7-3x for LSTMs,
~2x for ResNet-18 (static QDQ).
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from grove.errors import GroveError

MODES = ("dynamic", "static")
MODEL_SCOPE = "model"  # the export wrappers' submodule holding the trained model
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"

# Op types each mode may quantise (nodes outside the model scope never are).
DYNAMIC_OPS = ("MatMul", "LSTM")  # Gemm is rewritten to MatMul first; ConvInteger is slow on CPU
STATIC_OPS = (
    "Conv", "ConvTranspose", "MatMul", "Gemm",  # the int8 arithmetic
    # between them: folded into the convolution (Relu, Clip), run in int8 by ORT (QLinearAdd for
    # residual sums, pools, QLinearConcat) or moving int8 data as it is, so activations stay int8
    "Relu", "Clip", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
)
SMALL_WEIGHT = 4096  # MatMul/Gemm weights with fewer elements stay float (see _worth_quantising)
FRONT_END_OPS = ("STFT", "DFT", "Log")  # the structural fallback keeps these and all they read in float

# Float op types quantised, as they appear in an int8 graph (static QDQ graphs are counted by the
# float ops whose weight input is a DequantizeLinear).
_INTEGER_OPS = {
    "MatMulInteger": "MatMul", "DynamicQuantizeMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul",
    "QLinearMatMul": "MatMul", "QLinearConv": "Conv", "ConvInteger": "Conv",
    "DynamicQuantizeLSTM": "LSTM", "QGemm": "Gemm", "QAttention": "Attention",
}


# --- which mode ------------------------------------------------------------------------------


def int8_mode(model, example: tuple | None = None) -> str:
    """"static" when convolutions do most of the model's multiply-adds, else "dynamic".

    With `example` (the inputs the model is exported with) the multiply-adds of every Conv,
    Linear, RNN and attention projection are counted over one forward pass. Without it: a model
    with convolutions and no recurrent or attention layer is convolution-heavy (a CNN's classifier
    head may hold most of the weights, as in VGG, but does a small share of the work); a model
    with both is judged by weight count, Conv against Linear/RNN/attention (embeddings, being
    lookups, are not counted).
    """
    import torch
    from torch import nn

    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    if isinstance(example, torch.Tensor):
        example = (example,)
    if example is not None:
        conv, other = _multiply_adds(model, example, convs)
        if conv + other > 0:
            return "static" if conv > other else "dynamic"
    conv = other = 0
    sequence_layers = False
    for module in model.modules():
        if isinstance(module, convs):
            conv += module.weight.numel()
        elif isinstance(module, nn.Linear):
            other += module.weight.numel()
        elif isinstance(module, nn.RNNBase):
            sequence_layers = True
            other += sum(p.numel() for name, p in module.named_parameters() if name.startswith("weight"))
        elif _is_attention(module):
            sequence_layers = True
            if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                other += module.in_proj_weight.numel()  # q/k/v_proj_weight otherwise; out_proj is a Linear
            elif isinstance(module, nn.MultiheadAttention):
                other += sum(w.numel() for w in (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight))
    if conv and not sequence_layers:
        return "static"
    return "static" if conv > other else "dynamic"


def _is_attention(module) -> bool:
    return type(module).__name__.endswith("Attention")  # nn.MultiheadAttention, grove's, HF's


def _multiply_adds(model, example: tuple, convs: tuple) -> tuple[int, int]:
    """(conv, other) multiply-adds of one forward pass on `example`, counted by forward hooks."""
    import torch
    from torch import nn

    counts = [0, 0]

    def conv_hook(module, inputs, output):
        per_output = module.weight[0].numel()  # in_channels / groups * kernel
        counts[0] += output.numel() * per_output

    def linear_hook(module, inputs, output):
        counts[1] += output.numel() * module.in_features

    def rnn_hook(module, inputs, output):
        x = inputs[0]
        steps = x.data.shape[0] if isinstance(x, nn.utils.rnn.PackedSequence) else x.numel() // module.input_size
        weights = sum(p.numel() for name, p in module.named_parameters() if name.startswith("weight"))
        counts[1] += steps * weights

    def mha_hook(module, inputs, output):  # q, k, v and out projections (out_proj is not called as a module)
        counts[1] += inputs[0].numel() // module.embed_dim * 4 * module.embed_dim**2

    handles = []
    for module in model.modules():
        if isinstance(module, convs):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, nn.RNNBase):
            handles.append(module.register_forward_hook(rnn_hook))
        elif isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(mha_hook))
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for handle in handles:
            handle.remove()
    return counts[0], counts[1]


# --- quantising ------------------------------------------------------------------------------


def quantize(
    fp32_path: Path,
    out_path: Path,
    mode: str,
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
    *,
    scope: str = MODEL_SCOPE,
) -> None:
    """Write the int8 version of the graph at `fp32_path` to `out_path` (atomically).

    `mode` is "dynamic" or "static" (see the module docstring); static needs `calibration`, feeds
    of the graph's inputs by name (each may be a batch). Only nodes of the `scope` submodule are
    quantised. Whatever goes wrong in ONNX Runtime's tools is one GroveError line.
    """
    _quantize(fp32_path, out_path, mode, calibration, scope=scope)


def _quantize(
    fp32_path, out_path, mode, calibration=None, *, scope=MODEL_SCOPE, per_channel=True, reduce_range=True,
    activation="uint8", op_types=None, calibrate="minmax", gemm_to_matmul=True, preprocess=True,
) -> None:
    """`quantize` with its settings open (for measuring them against each other)."""
    if mode not in MODES:
        raise GroveError(f"int8 mode must be one of {', '.join(MODES)}, not {mode!r}")
    ort, quantization = _onnxruntime()

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    try:
        with _quiet(ort):
            _quantize_in(fp32_path, out_path, mode, calibration, ort, quantization, scope=scope,
                         per_channel=per_channel, reduce_range=reduce_range, activation=activation,
                         op_types=op_types, calibrate=calibrate, gemm_to_matmul=gemm_to_matmul, preprocess=preprocess)
    except OSError as err:  # the output folder (ORT's own OSErrors are GroveErrors by now)
        raise GroveError(f"int8 failed: cannot write {out_path} ({err.strerror or _first_line(err)})") from None


def _quantize_in(fp32_path, out_path, mode, calibration, ort, quantization, *, scope, per_channel, reduce_range,
                 activation, op_types, calibrate, gemm_to_matmul, preprocess) -> None:
    import onnx

    from grove.files import staging_dir

    with staging_dir(out_path.parent) as work:
        try:
            original = onnx.load(str(fp32_path))
        except Exception as err:  # noqa: BLE001 - a damaged file is the user's, one line
            raise GroveError(f"int8 failed: {fp32_path} cannot be read as ONNX ({_first_line(err)})") from None
        in_scope = _scope_map(original, scope)
        model = (_preprocess(fp32_path, work, quantization) if preprocess else None) or original
        names = _nodes_to_quantize(model, in_scope)
        ops = op_types or (DYNAMIC_OPS if mode == "dynamic" else STATIC_OPS)
        if mode == "dynamic" and gemm_to_matmul:
            names = _worth_quantising(model, names, (*ops, "Gemm"))
            model = _gemm_to_matmul(model, names)
        names = _worth_quantising(model, names, ops)
        if not names:
            raise GroveError(f"int8 failed: the graph has nothing {mode} quantisation handles "
                             f"({', '.join(sorted(set(ops) & {'Conv', 'MatMul', 'Gemm', 'LSTM'}))})")
        prepared = work / "prepared.onnx"
        _run("writing the graph to quantise", onnx.save, model, prepared)
        target = work / "int8.onnx"
        if mode == "dynamic":
            _run(
                "dynamic quantisation",
                quantization.quantize_dynamic,
                prepared, target, op_types_to_quantize=list(ops), nodes_to_quantize=names,
                per_channel=per_channel, reduce_range=reduce_range, weight_type=quantization.QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
        else:
            constants = {i.name for i in model.graph.initializer}
            inputs = [i.name for i in model.graph.input if i.name not in constants]
            reader = _reader(calibration, inputs, quantization)
            _run(
                "static quantisation",
                quantization.quantize_static,
                prepared, target, reader, quant_format=quantization.QuantFormat.QDQ,
                op_types_to_quantize=list(ops), nodes_to_quantize=names,
                per_channel=per_channel, reduce_range=reduce_range,
                activation_type=getattr(quantization.QuantType, "QUInt8" if activation == "uint8" else "QInt8"),
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax if calibrate == "minmax"
                else quantization.CalibrationMethod.Percentile,
            )
        if not quantized_ops(target):
            raise GroveError(f"int8 failed: {mode} quantisation left every op in float")
        try:
            ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001
            raise GroveError(f"int8 failed: ONNX Runtime cannot load the int8 graph ({_first_line(err)})") from None
        with open(target, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(target, out_path)


def quantized_ops(path) -> dict[str, int]:
    """How many nodes of each float op type run in int8 in the graph at `path` (or a ModelProto):
    {"MatMul": 12, "LSTM": 1} for a dynamic graph, {"Conv": 8, "Gemm": 1} for a QDQ one."""
    import onnx

    model = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path), load_external_data=False)
    nodes = model.graph.node
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    counts: dict[str, int] = {}
    for node in nodes:
        op = _INTEGER_OPS.get(node.op_type)
        if op is None and node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(node.input) > 1:
            op = node.op_type if node.input[1] in dequantized else None
        if op is not None:
            counts[op] = counts.get(op, 0) + 1
    return counts


# --- the steps -------------------------------------------------------------------------------


def _onnxruntime():
    try:
        import onnxruntime
        from onnxruntime import quantization
    except ImportError:
        raise GroveError("int8 export needs ONNX Runtime: pip install grove[deploy]") from None
    return onnxruntime, quantization


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def _run(what: str, fn, *args, **kwargs):
    try:
        return fn(*[str(a) if isinstance(a, Path) else a for a in args], **kwargs)
    except GroveError:
        raise
    except Exception as err:  # noqa: BLE001 - ORT's tools raise anything; the user gets one line
        raise GroveError(f"int8 failed in {what}: {type(err).__name__}: {_first_line(err)}") from None


@contextlib.contextmanager
def _quiet(ort) -> Iterator[None]:
    """ORT's quantisation tools log through the root logger (and would install a stderr handler
    on it) and warn freely; keep both to ourselves while they run."""
    root = logging.getLogger()
    level, guard = root.level, logging.NullHandler()
    root.addHandler(guard)  # a handler present: logging.warning() does not call basicConfig
    root.setLevel(logging.ERROR)
    try:
        ort.set_default_logger_severity(3)  # the calibration sessions' C++ warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        root.removeHandler(guard)
        with contextlib.suppress(Exception):
            ort.set_default_logger_severity(2)


def _scopes(node) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == _SCOPES_KEY:
            with contextlib.suppress(ValueError, SyntaxError):
                scopes = ast.literal_eval(prop.value)
                if isinstance(scopes, list):
                    return [str(s) for s in scopes]
    return None


def _scope_map(model, scope: str) -> dict[str, bool]:
    """Node name -> inside the `scope` submodule, for every named node of the exported graph.

    From the exporter's name scopes (['', 'model', 'model.conv', ...] for a node of `model`); a
    graph without them gets the structural rule: nodes feeding STFT/DFT/Log, and those, are out."""
    nodes = [n for n in model.graph.node if n.name]
    scopes = {n.name: _scopes(n) for n in nodes}
    if any(s for s in scopes.values()) and any(s and len(s) > 1 and s[1] == scope for s in scopes.values()):
        return {name: bool(s and len(s) > 1 and s[1] == scope) for name, s in scopes.items()}
    producer = {o: n for n in model.graph.node for o in n.output}
    float_nodes: set[int] = set()
    stack = [n for n in model.graph.node if n.op_type in FRONT_END_OPS]
    while stack:
        node = stack.pop()
        if id(node) in float_nodes:
            continue
        float_nodes.add(id(node))
        stack.extend(producer[i] for i in node.input if i in producer)
    return {n.name: id(n) not in float_nodes for n in nodes}


def _preprocess(fp32_path: Path, work: Path, quantization):
    """ORT's recommended pre-processing (symbolic shape inference, constant folding, which turns
    the LSTM weights the exporter slices and concatenates into initializers, and ORT's basic
    graph optimisations), or None when it fails on this graph (the exported graph is used as is)."""
    import onnx

    out = work / "pre.onnx"
    here = os.getcwd()
    os.chdir(work)  # its shape inference writes temporary files into the current folder
    try:
        for options in ({}, {"skip_symbolic_shape": True}):
            try:
                quantization.quant_pre_process(str(fp32_path.resolve()), str(out.resolve()), **options)
                return onnx.load(str(out))
            except Exception:  # noqa: BLE001 - an optional step
                continue
    finally:
        os.chdir(here)
    return None


def _nodes_to_quantize(model, in_scope: dict[str, bool]) -> list[str]:
    """The nodes of the (pre-processed) graph inside the model scope. ORT keeps the names of the
    nodes it leaves alone and derives fused ones from them ("name/MatMulAddFusion"); a node with
    a new name inherits the scope of whatever produces its inputs."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    decided: dict[str, bool] = {}

    def inside(node, depth=0) -> bool:
        if node.name in decided:
            return decided[node.name]
        known = in_scope.get(node.name)
        if known is None and node.name:
            known = in_scope.get(node.name.split("/")[0])
        if known is None and depth < 8:  # new: inside when all it reads (else all that reads it) is
            near = [producer[i] for i in node.input if i in producer]
            near = near or [c for o in node.output for c in consumers.get(o, [])]
            known = bool(near) and all(inside(n, depth + 1) for n in near)
        decided[node.name] = bool(known)
        return bool(known)

    names: dict[str, None] = {}  # in graph order, once each
    for node in model.graph.node:  # ORT addresses nodes by name: unnamed ones cannot be chosen
        if node.name and node.name not in names and inside(node):
            names[node.name] = None
    return list(names)


def _worth_quantising(model, names: list[str], ops) -> list[str]:
    """The chosen nodes of the op types `ops`, less MatMul/Gemm with a small constant weight (a
    classifier head over a few classes): int8 saves nothing there and adds error to the logits."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    chosen = set(names)
    kept = []
    for node in model.graph.node:
        if node.name not in chosen or node.op_type not in ops:
            continue
        if node.op_type in ("MatMul", "Gemm") and sizes.get(node.input[1], SMALL_WEIGHT) < SMALL_WEIGHT:
            continue
        kept.append(node.name)
    return kept


def _gemm_to_matmul(model, names: list[str]):
    """Each chosen Gemm (alpha 1, A not transposed, constant B) as MatMul + Add, so dynamic
    quantisation reaches it; the MatMul keeps the Gemm's name (and so its place in `names`)."""
    from onnx import helper, numpy_helper

    chosen = set(names)
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes, added = [], []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        if (node.op_type != "Gemm" or node.name not in chosen or node.input[1] not in inits
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("transA", 0)
                or (bias and attrs.get("beta", 1.0) != 1.0 and bias not in inits)):
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        weight_name = f"{node.input[1]}__matmul_{len(added)}"
        added.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        product = node.output[0] if not bias else f"{node.output[0]}__matmul"
        new_nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=node.name))
        if bias:
            beta = float(attrs.get("beta", 1.0))
            if beta != 1.0:
                scaled = f"{bias}__beta_{len(added)}"
                added.append(numpy_helper.from_array(
                    (numpy_helper.to_array(inits[bias]) * beta).astype(np.float32), scaled))
                bias = scaled
            new_nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{node.name}/bias"))
    if not added:
        return model
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(added)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def _reader(calibration, input_names: list[str], quantization):
    """A CalibrationDataReader over the feeds (checked against the graph's inputs)."""
    feeds = iter(calibration if calibration is not None else ())
    first = next(feeds, None)
    if first is None:
        raise GroveError("int8 failed: static quantisation needs calibration inputs, and none were given")

    class Feeds(quantization.CalibrationDataReader):
        def __init__(self):
            self.feeds, self.count = itertools.chain([first], feeds), 0

        def get_next(self):
            feed = next(self.feeds, None)
            if feed is None:
                return None
            missing = [n for n in input_names if n not in feed]
            extra = [n for n in feed if n not in input_names]
            if missing or extra:
                raise GroveError(
                    f"int8 failed: a calibration feed has inputs {sorted(feed)}, the graph takes {input_names}"
                )
            self.count += 1
            return {name: np.ascontiguousarray(value) for name, value in feed.items()}

    return Feeds()
