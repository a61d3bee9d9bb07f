"""Opening an exported graph: feeds by input name -> outputs in the graph's order, NumPy in and out.

ONNX graphs run on ONNX Runtime: `threads` intra-op threads (default: this process's physical
cores; hyper-threads share one core's arithmetic units and only add contention to a matmul) and
one inter-op thread (the graphs are one chain of ops, nothing to run side by side); the CUDA
provider first when this onnxruntime build has it. A torch.export program (`--format pt2`)
runs on PyTorch, imported only then: that is a PyTorch deployment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from grove.errors import GroveError


def physical_cores() -> int:
    """Physical cores this process may run on (from /proc/cpuinfo); os.cpu_count() where that
    cannot be read."""
    try:
        allowed = os.sched_getaffinity(0)
        text = Path("/proc/cpuinfo").read_text()
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    return count_cores(text, allowed) or len(allowed) or 1


def count_cores(cpuinfo: str, allowed) -> int:
    """Distinct (physical id, core id) pairs among the processors in `allowed`; 0 when /proc/cpuinfo
    does not list core ids (some ARM and virtual machines)."""
    cores = set()
    for block in cpuinfo.split("\n\n"):
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}
        if "processor" in fields and "core id" in fields and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores)


class OnnxSession:
    """An ONNX graph on ONNX Runtime."""

    def __init__(self, path: Path, threads: int | None = None):
        ort = _onnxruntime()
        if not path.is_file():
            raise GroveError(f"{path} is missing: export the run again (`grove export RUN`)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads(threads)
        options.inter_op_num_threads = 1
        # Idle threads that spin waiting for work made 2-thread sessions 5-8x slower on a CPU
        # other processes share; the cost on an idle machine is a few microseconds per op.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings about graph rewrites are not the user's concern
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        state = ort.capi.onnxruntime_pybind11_state
        failures = (state.NoSuchFile, state.InvalidProtobuf, state.InvalidGraph, state.Fail, state.NoModel,
                    state.InvalidArgument, state.NotImplemented, state.RuntimeException)
        self.failures = failures
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except failures as err:
            raise GroveError(
                f"{path} is not a graph ONNX Runtime can load ({_status(err)}): it is damaged or incomplete; "
                "export the run again"
            ) from None
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        # The runtime decodes inputs as export.json says; a graph that refuses them means the
        # manifest was edited (an image size, a layer count) or belongs to another graph.
        except self.failures as err:
            raise GroveError(f"{self.path} refused its inputs ({_status(err)}: {_detail(err)}): the export folder's "
                             "export.json does not describe this graph; export the run again") from None


class Pt2Session:
    """A torch.export program (`grove export --format pt2`); feeds are passed in their order."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import torch
        except ImportError:
            raise GroveError(
                f"{path} is a torch.export program: running it needs PyTorch (or export with --format onnx, "
                "which runs on ONNX Runtime alone)"
            ) from None
        if not path.is_file():
            raise GroveError(f"{path} is missing: export the run again (`grove export RUN --format pt2`)")
        torch.set_num_threads(_threads(threads))
        try:
            self.module = torch.export.load(str(path)).module()
        # A damaged archive surfaces as zipfile, pickle, RuntimeError or KeyError failures, among
        # others: any of them means the file is unusable, not that grove has a bug.
        except Exception as err:
            raise GroveError(f"{path} cannot be loaded ({_first_line(err)}): export the run again") from None
        self.path = path
        self.torch = torch

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        with torch.no_grad():
            outputs = self.module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in feeds.values()))
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return [o.detach().cpu().numpy() for o in outputs]


def open_session(path, format: str = "onnx", threads: int | None = None) -> OnnxSession | Pt2Session:
    """The graph at `path` ("onnx" or "pt2"), ready to `run(feeds)`."""
    return (Pt2Session if format == "pt2" else OnnxSession)(Path(path), threads)


def _threads(threads: int | None) -> int:
    if threads is None:
        return physical_cores()
    if threads < 1:
        raise GroveError(f"threads must be at least 1, got {threads}")
    return int(threads)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise GroveError("running an exported model needs onnxruntime: pip install 'grove[deploy]'") from None
    return onnxruntime


def _status(err: Exception) -> str:
    # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from ... failed: ..." -> "INVALID_PROTOBUF"
    found = re.search(r":\s*\d+\s*:\s*([A-Z_]+)\s*:", str(err))
    return found.group(1).lower().replace("_", " ") if found else type(err).__name__


def _detail(err: Exception) -> str:
    # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: image ..." -> "Got invalid ..."
    text = " ".join(str(err).split())
    return re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", text)[:200]


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__
