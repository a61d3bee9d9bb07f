"""Opening a graph: threads as asked, damaged files in one line, and the pt2 backend."""

import sys

import numpy as np
import pytest

from grove.errors import GroveError
from grove.runtime import session as sessions
from grove.runtime.session import count_cores, open_session, physical_cores

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def plus_one(tmp_path_factory):
    """A two-output ONNX graph made by hand: y = x + 1, z = x * 2 over float32 (batch, 3)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"]), helper.make_node("Mul", ["x", "two"], ["z"])],
        "plus_one", [x], [y, z], initializer=[one, two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_a_graph_runs_with_numpy_in_and_out(plus_one):
    session = open_session(plus_one)
    assert session.input_names == ["x"] and session.output_names == ["y", "z"]
    y, z = session.run({"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert y.tolist() == [[1, 2, 3], [4, 5, 6]] and z[1].tolist() == [6, 8, 10]


def test_threads_are_honoured_and_default_to_the_physical_cores(plus_one):
    options = open_session(plus_one, threads=3).session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert open_session(plus_one).session.get_session_options().intra_op_num_threads == physical_cores()
    with pytest.raises(GroveError, match="threads must be at least 1"):
        open_session(plus_one, threads=0)


def test_physical_cores_count_core_ids_not_hyperthreads():
    cpuinfo = "\n\n".join(
        f"processor\t: {cpu}\nphysical id\t: {cpu // 4}\ncore id\t\t: {cpu % 2}" for cpu in range(8)
    )  # 2 sockets x 2 cores x 2 hyper-threads
    assert count_cores(cpuinfo, set(range(8))) == 4
    assert count_cores(cpuinfo, {0, 1}) == 2  # the affinity mask limits it
    assert count_cores(cpuinfo, {0, 2}) == 1  # two hyper-threads of one core
    assert count_cores("processor\t: 0\nBogoMIPS\t: 50\n", {0}) == 0  # no core ids: physical_cores falls back
    assert 1 <= physical_cores()


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: b"not a graph at all", lambda data: b"", None],
    ids=["truncated", "garbage", "empty", "missing"],
)
def test_a_damaged_graph_is_one_line_naming_it(plus_one, tmp_path, damage):
    path = tmp_path / "model.onnx"
    if damage is not None:
        path.write_bytes(damage(plus_one.read_bytes()))
    with pytest.raises(GroveError) as err:
        open_session(path)
    message = str(err.value)
    assert str(path) in message and "export the run again" in message and "\n" not in message


def test_without_onnxruntime_the_error_says_what_to_install(plus_one, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(GroveError, match=r"pip install 'grove\[deploy\]'"):
        open_session(plus_one)


@pytest.mark.e2e  # torch.export takes seconds
def test_the_pt2_backend_runs_a_torch_export_program(tmp_path, monkeypatch):
    import torch

    class TwoOutputs(torch.nn.Module):
        def forward(self, x, y):
            return x + y, x * y

    program = torch.export.export(TwoOutputs(), (torch.ones(2, 3), torch.ones(2, 3)))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    threads = torch.get_num_threads()
    try:
        session = open_session(tmp_path / "model.pt2", "pt2", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    x, y = np.full((2, 3), 2, np.float32), np.full((2, 3), 5, np.float32)
    total, product = session.run({"x": x, "y": y})  # by position
    assert isinstance(total, np.ndarray) and total[0, 0] == 7 and product[1, 2] == 10
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(GroveError, match="bad.pt2 cannot be loaded .*export the run again"):
        open_session(tmp_path / "bad.pt2", "pt2")
    monkeypatch.setattr(sessions, "OnnxSession", None)  # pt2 never touches ONNX Runtime
    open_session(tmp_path / "model.pt2", "pt2", threads=threads)
