"""`grove export RUN`: a trained run as a graph that runs without grove's model code.

    folder, manifest = export_run("runs/digits-cnn/20261201-101500")            # ONNX
    export_run(run, format="pt2")                                                # torch.export
    export_run(run, int8=True)                                                   # + model.int8.onnx

    graphs    the model behind its preprocessing, one wrapper per task (what is traced)
    parity    eager model against the exported graph on the run's own held-out inputs
    quantize  int8 with ONNX Runtime's tools: dynamic for Linear/RNN models, static QDQ for CNNs

The export folder is built in a staging folder and renamed into place, so a failed or killed
export leaves nothing half-written; its layout and the graph's inputs and outputs are described in
grove/runtime/manifest.py, which the torch-free runtime (grove/runtime) reads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from grove import __version__
from grove.errors import GroveError
from grove.export.graphs import GraphSpec, dynamic_shapes, empty_state, graph_for
from grove.export.parity import check_parity, graph_inputs
from grove.files import staging_dir
from grove.rundir import LoadedRun, load_run
from grove.runtime.manifest import (
    MANIFEST, AudioPre, Generation, ImagePre, Int8, Manifest, Preprocess, Tensor, TextPre, file_digest,
    is_export_dir, write_manifest,
)

FORMATS = ("onnx", "pt2")
PARITY_INPUTS = 64  # held-out inputs the parity check runs on
CALIBRATION_INPUTS = 256  # training inputs static int8 calibrates activation ranges on
FILES = {"onnx": "model.onnx", "pt2": "model.pt2"}
INT8_FILE = "model.int8.onnx"


def export_run(run_dir, out=None, format: str = "onnx", int8: bool = False, checkpoint: str = "best",
               threads: int | None = None) -> tuple[Path, Manifest]:
    """Exports a run's checkpoint with its preprocessing, proves parity, optionally quantises to int8.
    Returns the export folder and its manifest; a GroveError says what went wrong, and then no
    folder was written."""
    if format not in FORMATS:
        raise GroveError(f"--format must be one of {', '.join(FORMATS)}; got '{format}'")
    if int8 and format != "onnx":
        raise GroveError("--int8 quantises ONNX graphs with ONNX Runtime: use it with --format onnx")
    loaded = load_run(run_dir, checkpoint, "cpu")
    out = Path(out) if out else loaded.dir.path / ("export" if format == "onnx" else "export-pt2")
    _check_out(out)
    spec = graph_for(loaded)
    split, batch = _held_out_batch(loaded, PARITY_INPUTS)
    inputs = graph_inputs(loaded.meta.task, loaded.meta.modality, batch)
    example = _example(spec, inputs)
    try:
        with staging_dir(out.parent) as stage, _quiet():
            graph_file = stage / FILES[format]
            opset, output_shapes = _export(spec, example, graph_file, format)
            run = _runner(graph_file, format, spec, threads)
            parity = check_parity(spec, loaded.meta.task, loaded.meta.modality, inputs, run, split)
            manifest = _manifest(loaded, spec, format, opset, parity, example, run, output_shapes)
            _copy_tokenizer(loaded, stage)
            if int8:
                manifest.int8 = _quantize(loaded, spec, stage, graph_file, inputs, threads, split)
            graphs = [manifest.file] + ([manifest.int8.file] if manifest.int8 else [])
            manifest.sha256 = {name: file_digest(stage / name) for name in graphs}
            write_manifest(stage, manifest)
            _replace(stage, out)
    except OSError as err:  # a folder that cannot be written, a full disk
        raise GroveError(f"cannot write the export folder {out} ({err.strerror or err}): free space or pass another --out") from None
    return out, manifest


def _check_out(out: Path) -> None:
    """An earlier export there is replaced; anything else is never deleted."""
    if out.exists() and not out.is_dir():
        raise GroveError(f"--out {out} is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not is_export_dir(out):
            raise GroveError(f"{out} exists and is not an export folder: pass another --out")
        own = {MANIFEST, *FILES.values(), INT8_FILE, "tokenizer"}
        foreign = sorted(p.name for p in out.iterdir() if p.name not in own)
        if foreign:
            raise GroveError(f"{out} holds files an export does not write ({', '.join(foreign[:3])}): move them, "
                             "or pass another --out")


# -- inputs ------------------------------------------------------------------------------------
def _held_out_batch(loaded: LoadedRun, n: int, split: str = "val"):
    """The first n inputs of a split of the run's own data (val, or test where there is no val)."""
    from grove.data.loader import BatchLoader
    from grove.engine.build import build_split

    try:
        split, data = build_split(loaded.recipe.data, split, loaded.dir, loaded.meta)
    except GroveError:
        if split != "val":
            raise
        split, data = build_split(loaded.recipe.data, None, loaded.dir, loaded.meta)
    loader = BatchLoader(data, n, train=False, device=torch.device("cpu"))
    for batch, _ in loader.epoch(0):
        return split, batch
    raise GroveError(f"the {split} split has no readable inputs to check the export on")


def _example(spec: GraphSpec, inputs: list[torch.Tensor]) -> tuple:
    """Tracing inputs: up to 7 held-out inputs (at least 2: torch.export specialises axes of size 0
    or 1, so a lone input is repeated); a language model also gets a 3-token past, and a prompt
    short enough for the past to fit its context."""
    if inputs[0].shape[0] == 1:
        inputs = [x.repeat_interleave(2, dim=0) for x in inputs]
    example = [x[:7] for x in inputs]
    g = spec.generation
    if g is None:
        return tuple(example)
    ids, batch = example[0], example[0].shape[0]
    if g["kind"] == "kv_cache":
        ids = ids[:, : max(2, min(ids.shape[1], g["block_size"] - 3))]
        past = torch.randn(g["n_layer"], batch, g["n_head"], 3, g["head_dim"])
        return ids, past, past.clone()
    return (ids, *empty_state(spec, batch))


# -- tracing -----------------------------------------------------------------------------------
def _export(spec: GraphSpec, example: tuple, path: Path, format: str) -> tuple[int | None, list]:
    """Traces the wrapper with dynamic axes (see _trace)."""
    from grove.models.layers.rnn import rnn_export_decompositions

    module = spec.module.eval()
    try:
        with rnn_export_decompositions():  # RNNs traced once, not step by step (see there)
            return _trace(module, spec, example, path, format)
    except ImportError as err:
        raise GroveError(f"ONNX export needs onnx and onnxscript ({err}): pip install 'grove[deploy]'") from None
    except Exception as err:  # torch.export reports an untraceable construct as any of many types
        raise GroveError(f"the model cannot be exported to {format}: {_first_line(err)}") from None


def _trace(module, spec: GraphSpec, example: tuple, path: Path, format: str) -> tuple[int | None, list]:
    """Writes the graph; returns its ONNX opset (None for pt2) and its output shapes, whose str
    entries are the dynamic axes as the graph computes them ("batch", "past + tokens" ...)."""
    if format == "pt2":
        program = _torch_export(module, example, dynamic_shapes(spec))
        torch.export.save(program, str(path))
        return None, _program_output_shapes(program, spec)
    program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes=dynamic_shapes(spec),
                                input_names=spec.input_names, output_names=spec.output_names, verbose=False,
                                optimize=True)
    program.save(str(path))
    proto = program.model_proto
    shapes = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output]
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None), shapes


def _program_output_shapes(program: torch.export.ExportedProgram, spec: GraphSpec) -> list:
    """An ExportedProgram's output shapes, its size symbols renamed to the declared axis names."""
    nodes = {n.name: n for n in program.graph.nodes}
    names = {}
    for i, node_name in enumerate(program.graph_signature.user_inputs):
        shape = nodes[node_name].meta["val"].shape
        names.update({str(shape[axis]): axis_name for axis, axis_name in spec.dynamic[i].items()})
    def name(dim) -> int | str:
        text = str(dim)
        return int(text) if text.isdigit() else re.sub(r"\b[a-z]\d+\b", lambda m: names.get(m.group(0), m.group(0)), text)

    return [[name(d) for d in nodes[n].meta["val"].shape] for n in program.graph_signature.user_outputs]


def _torch_export(module, example: tuple, shapes: tuple) -> torch.export.ExportedProgram:
    """torch.export as the ONNX exporter calls it: sizes 0 and 1 stay dynamic (an empty cache),
    and the model's own size checks (a GPT's past + tokens <= block_size) refine the declared axes."""
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        try:
            return torch.export.export(module, example, dynamic_shapes=shapes, strict=False,
                                       prefer_deferred_runtime_asserts_over_guards=True)
        except torch._dynamo.exc.UserError as err:
            refined = torch.export.dynamic_shapes.refine_dynamic_shapes_from_suggested_fixes(err.msg, shapes)
            return torch.export.export(module, example, dynamic_shapes=refined, strict=False,
                                       prefer_deferred_runtime_asserts_over_guards=True)


def _runner(path: Path, format: str, spec: GraphSpec, threads: int | None):
    """The exported graph as a function of numpy inputs, run the way the runtime runs it."""
    from grove.runtime.session import open_session

    session = open_session(path, format, threads)
    return lambda arrays: session.run(dict(zip(spec.input_names, arrays)))


@contextmanager
def _quiet():
    """The exporter logs and warns about optional packages and its own steps: not the user's concern."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# -- the folder --------------------------------------------------------------------------------
def _manifest(loaded: LoadedRun, spec: GraphSpec, format: str, opset, parity, example, run, output_shapes) -> Manifest:
    meta = loaded.meta
    outputs = run([x.numpy() for x in example])  # their dtypes
    return Manifest(
        grove_version=__version__,
        recipe=meta.recipe,
        task=meta.task,
        modality=meta.modality,
        model=meta.model.model_dump(),
        checkpoint=loaded.checkpoint,
        step=int(loaded.dir.checkpoint(loaded.checkpoint).name.split("-")[1]),
        classes=meta.classes,
        format=format,
        file=FILES[format],
        opset=opset,
        inputs=[_tensor(n, x.shape, str(x.dtype).removeprefix("torch."), axes)
                for n, x, axes in zip(spec.input_names, example, spec.dynamic)],
        outputs=[Tensor(name=n, shape=shape, dtype=str(o.dtype)) for n, o, shape in zip(spec.output_names, outputs, output_shapes)],
        preprocess=_preprocess(loaded),
        generation=Generation(**spec.generation) if spec.generation else None,
        parity=parity,
    )


def _tensor(name: str, shape, dtype: str, axes: dict[int, str]) -> Tensor:
    return Tensor(name=name, shape=[axes.get(i, int(s)) for i, s in enumerate(shape)], dtype=dtype)


def _preprocess(loaded: LoadedRun) -> Preprocess:
    meta, data = loaded.meta, loaded.meta.data
    if meta.modality == "image":
        t = loaded.transform
        return Preprocess(image=ImagePre(size=data["load_size"], channels=data["channels"], mean=t.mean, std=t.std,
                                         crop_size=t.crop_size))
    if meta.modality == "audio":
        from grove.data.audio.options import as_dict

        t = loaded.transform
        clip = None if data.get("kind") == "transcription" else round(data["clip_seconds"] * t.sample_rate)
        return Preprocess(audio=AudioPre(sample_rate=t.sample_rate, clip_samples=clip, features=as_dict(t.features)))
    return Preprocess(text=TextPre(tokenizer="tokenizer", pad_id=data.get("pad_id"), max_len=data.get("max_len")))


def _copy_tokenizer(loaded: LoadedRun, stage: Path) -> None:
    if loaded.tokenizer is not None:
        shutil.copytree(loaded.dir.path / "data", stage / "tokenizer")


def _replace(stage: Path, out: Path) -> None:
    """The staged folder becomes `out`; an older export there is removed only once the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- int8 ---------------------------------------------------------------------------------------
def _quantize(loaded: LoadedRun, spec: GraphSpec, stage: Path, fp32: Path, inputs, threads, split) -> Int8:
    """model.int8.onnx, its parity against the eager model, and test metrics before and after."""
    from grove.export.quantize import int8_mode, quantize

    mode = int8_mode(loaded.model, loaded.model.example_input(2))
    calibration, calibrated = None, 0
    if mode == "static":  # activation ranges from training inputs, fed 16 at a time
        # A private run's guarantee covers its training data only through DP-SGD: min/max ranges
        # set by single training examples would leak them, so it calibrates on held-out inputs.
        private = loaded.recipe.privacy.enabled
        _, batch = _held_out_batch(loaded, CALIBRATION_INPUTS, "val" if private else "train")
        feeds = [x.numpy() for x in graph_inputs(loaded.meta.task, loaded.meta.modality, batch)]
        calibrated = len(feeds[0])
        calibration = [dict(zip(spec.input_names, (x[i : i + 16] for x in feeds))) for i in range(0, calibrated, 16)]
    quantize(fp32, stage / INT8_FILE, mode, calibration)
    int8_run = _runner(stage / INT8_FILE, "onnx", spec, threads)
    parity = check_parity(spec, loaded.meta.task, loaded.meta.modality, inputs, int8_run, split, enforce=False)
    before = _graph_metrics(loaded, spec, _runner(fp32, "onnx", spec, threads))
    after = _graph_metrics(loaded, spec, int8_run)
    return Int8(mode=mode, file=INT8_FILE, calibration_inputs=calibrated, parity=parity, split=before.pop("split"),
                before=before, after={k: v for k, v in after.items() if k != "split"},
                warnings=_int8_warnings(before, after))


def _graph_metrics(loaded: LoadedRun, spec: GraphSpec, run) -> dict:
    """The task's metrics of an exported graph on the test split (val where there is none), through
    the same evaluation loop as the eager model."""
    from grove.data.loader import BatchLoader
    from grove.engine.build import build_split
    from grove.engine.evaluate import evaluate
    from grove.engine.precision import Speed

    recipe = loaded.recipe
    split, data = build_split(recipe.data, None, loaded.dir, loaded.meta)
    loader = BatchLoader(data, recipe.data.eval_batch_size or 64, train=False, device=torch.device("cpu"))
    speed = Speed("cpu", "fp32", channels_last=False, compile=False, keep_freed_memory=False)
    graph = GraphModule(spec, run, loaded.meta.task)
    figures = evaluate(graph, loader, loaded.task, graph.transform(loaded.meta.modality), speed)
    return {"split": split, **{k: v for k, v in figures.items() if isinstance(v, float)}}


class GraphModule(torch.nn.Module):
    """An exported graph with the eager model's call signature, so the task's step and metrics
    score it unchanged; its `transform` hands the raw batch through (the graph preprocesses)."""

    def __init__(self, spec: GraphSpec, run, task: str):
        super().__init__()
        self.spec, self.run, self.task = spec, run, task

    def transform(self, modality: str):
        task = self.task

        def raw(batch, train: bool):
            inputs = graph_inputs(task, modality, batch)
            return {"features": inputs[0], "lengths": inputs[1]} if task == "ctc" else inputs[0]

        return raw

    def forward(self, x, lengths=None, state=None, return_state: bool = False):
        from grove.models.layers.contract import CTCOutput, LMOutput

        if self.task == "ctc":
            log_probs, out_lengths = self.run([x.numpy(), lengths.numpy()])
            return CTCOutput(torch.from_numpy(log_probs), torch.from_numpy(out_lengths))
        if self.spec.generation is None:
            return torch.from_numpy(self.run([x.numpy()])[0])
        if state is None:
            state = empty_state(self.spec, x.shape[0])
        state = [state] if isinstance(state, torch.Tensor) else list(state)
        logits, *new = self.run([x.numpy(), *(s.numpy() for s in state)])
        logits = torch.from_numpy(logits)
        if not return_state:
            return logits
        new = [torch.from_numpy(s) for s in new]
        return LMOutput(logits, new[0] if len(new) == 1 else tuple(new))


def _int8_warnings(before: dict, after: dict) -> list[str]:
    """A drop of more than 1 point of accuracy, or a rise of more than 2% in perplexity/CER/WER."""
    out = []
    for name in ("accuracy", "top5"):
        if name in before and before[name] - after[name] > 0.01:
            out.append(f"int8 {name} {after[name]:.4f} is {100 * (before[name] - after[name]):.1f} points below fp32's {before[name]:.4f}")
    for name in ("perplexity", "cer", "wer"):
        if name in before and after[name] > before[name] * 1.02 + 1e-12:
            out.append(f"int8 {name} {after[name]:.4f} is {100 * (after[name] / max(before[name], 1e-12) - 1):.1f}% above fp32's {before[name]:.4f}")
    return out


def _first_line(err: BaseException) -> str:
    while err.__cause__ is not None:  # the exporter wraps torch.export's own words in its advice
        err = err.__cause__
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__
