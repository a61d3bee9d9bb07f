"""An export folder through `grove.load` and `grove predict/generate`: no torch imported, the same
answers as the run it came from, and a damaged folder reported in one line.

One tiny run per kind of model (a few training steps: the point is the plumbing, not accuracy),
each exported once for the whole module.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import KINDS, run_grove

pytestmark = pytest.mark.e2e
sf = pytest.importorskip("soundfile")
pytest.importorskip("onnxruntime")

def fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_exports_run_in_a_process_that_never_imports_torch(tiny_runs, tiny_samples):
    """Each modality and both kinds of language model, one after the other in one fresh
    interpreter, with sys.modules checked after each; then `grove predict` and `grove generate`."""
    exports = {kind: str(tiny_runs[kind][1]) for kind in KINDS}
    result = fresh_python(f"""
        import json, sys
        import grove
        from grove.cli import main

        exports, tiny_samples = {json.dumps(exports)}, {json.dumps(tiny_samples)}
        answers = {{}}
        for kind, folder in exports.items():
            predictor = grove.load(folder, threads=1)
            if kind in ("gpt", "lstm"):
                answers[kind] = "".join(predictor.generate("Fir", max_new_tokens=12, temperature=0))
            else:
                answers[kind] = predictor.predict(tiny_samples[kind], top=2)
            assert "torch" not in sys.modules, kind + " imported torch"
        assert main(["predict", exports["image"], tiny_samples["image"][0], "--threads", "1"]) == 0
        assert main(["generate", exports["gpt"], "--prompt", "Fir", "--max-new-tokens", "3", "--seed", "0"]) == 0
        assert "torch" not in sys.modules, "the CLI imported torch"
        print(json.dumps(answers))
    """)
    assert result.returncode == 0, result.stderr
    *printed, last = result.stdout.splitlines()
    answers = json.loads(last)
    assert printed[0].startswith(tiny_samples["image"][0] + ": ") and printed[1].startswith("Fir")
    assert len(answers["image"]) == 6 and len(answers["image"][0]) == 2
    assert all(isinstance(t, str) for t in answers["ctc"]) and len(answers["gpt"]) >= 1


def eager_and_exported(tiny_runs, kind):
    import grove

    run, folder = tiny_runs[kind]
    return grove.load(run), grove.load(folder, threads=1)


def assert_same_rankings(eager, exported):
    assert len(eager) == len(exported)
    for a, b in zip(eager, exported):
        assert [label for label, _ in a] == [label for label, _ in b]
        np.testing.assert_allclose([p for _, p in a], [p for _, p in b], atol=1e-4)


@pytest.mark.parametrize("kind", ["image", "text", "keyword"])
def test_classifiers_give_the_eager_answers(tiny_runs, tiny_samples, kind):
    eager, exported = eager_and_exported(tiny_runs, kind)
    assert (exported.task, exported.modality, exported.classes) == (eager.task, eager.modality, eager.classes)
    assert_same_rankings(eager.predict(tiny_samples[kind], top=3), exported.predict(tiny_samples[kind], top=3))
    one = tiny_samples[kind][0]
    assert_same_rankings(eager.predict(one), exported.predict(one))  # a lone input is a batch of one


def test_images_as_arrays_pil_images_and_tensors(tiny_runs, tiny_samples):
    import torch

    eager, exported = eager_and_exported(tiny_runs, "image")
    arrays = [np.array(Image.open(p)) for p in tiny_samples["image"][:3]]
    pil = [Image.open(p) for p in tiny_samples["image"][3:]]
    tensor = torch.from_numpy(arrays[0])[None]  # (1, H, W), as CxHxW
    assert_same_rankings(eager.predict(arrays + pil), exported.predict(arrays + pil))
    assert_same_rankings(eager.predict(tensor), exported.predict(tensor))


def test_transcripts_are_the_eager_ones_greedy_and_beam(tiny_runs, tiny_samples):
    eager, exported = eager_and_exported(tiny_runs, "ctc")
    for beam_width in (0, 1, 8):
        assert exported.predict(tiny_samples["ctc"], beam_width=beam_width) == eager.predict(tiny_samples["ctc"], beam_width=beam_width)
    assert exported.classes == eager.classes


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_greedy_generation_is_the_eager_text(tiny_runs, kind):
    eager, exported = eager_and_exported(tiny_runs, kind)
    # 40 new tokens from a 3-token prompt run the gpt's block of 8 full and then slide it.
    options = dict(max_new_tokens=40, temperature=0, seed=0)
    pieces = list(exported.generate("Fir", **options))
    assert pieces == list(eager.generate("Fir", **options))
    assert "".join(pieces) == "".join(exported.generate("Fir", max_new_tokens=40, top_k=1, seed=5))


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_step_by_step_logits_are_the_eager_models(tiny_runs, kind):
    """Fed the same tokens, the exported state (a KV cache that fills, then a block of 8 that
    slides and is recomputed; or an LSTM state) gives the eager logits at every step."""
    import torch

    eager, exported = eager_and_exported(tiny_runs, kind)
    ids = eager.tokenizer.encode("First Citizen:\nBefore we proceed", add_special_tokens=False)
    new, eager_state, state = ids[:3], None, None
    with torch.no_grad():
        for token in ids[3:]:
            expected, eager_state = eager.model.next_token_logits(torch.tensor([new]), eager_state)
            logits, state = exported.next_token_logits(np.array([new], dtype=np.int64), state)
            np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
            new = [token]


def test_sampling_follows_the_seed_and_reports_bad_options(tiny_runs):
    from grove.errors import GroveError

    _, exported = eager_and_exported(tiny_runs, "gpt")
    sampled = ["".join(exported.generate("Fir", max_new_tokens=20, top_k=5, top_p=0.9, seed=s)) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2] and len(sampled[0]) == 20
    with pytest.raises(GroveError, match="top_p must be in"):
        next(exported.generate("Fir", top_p=2.0))
    with pytest.raises(GroveError, match="outside the vocabulary"):
        next(exported.generate("Fir~"))
    with pytest.raises(GroveError, match="use generate"):
        exported.predict(["Fir"])


def test_unreadable_inputs_are_errors_in_their_place(tiny_runs, tiny_samples, tmp_path):
    from grove.errors import GroveError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    _, exported = eager_and_exported(tiny_runs, "image")
    results = exported.predict_each([tiny_samples["image"][0], bad])
    assert isinstance(results[1], GroveError) and str(bad) in str(results[1]) and len(results[0]) == 5
    with pytest.raises(GroveError, match="cannot read image"):
        exported.predict([bad])


def test_threads_reach_onnx_runtime_and_torch(tiny_runs, tiny_samples, capsys):
    import torch

    import grove
    from grove.cli import main

    options = grove.load(tiny_runs["image"][1], threads=1).session.session.get_session_options()
    capsys.readouterr()  # the tiny run's training log, when it was trained just now
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    before = torch.get_num_threads()
    try:
        assert main(["predict", str(tiny_runs["image"][0]), tiny_samples["image"][0], "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1  # a run directory predicts on PyTorch
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().out.startswith(tiny_samples["image"][0] + ": ")


def test_the_export_command_prints_parity_int8_figures_and_the_folder(tiny_runs, monkeypatch, capsys):
    import grove.export
    from grove.cli import main
    from grove.runtime.manifest import Int8, read_manifest

    folder = tiny_runs["image"][1]
    capsys.readouterr()  # the tiny run's training log, when it was trained just now
    manifest = read_manifest(folder)
    calls = []

    def export_run(run_dir, **options):
        calls.append((run_dir, options))
        return folder, manifest

    monkeypatch.setattr(grove.export, "export_run", export_run)
    assert main(["export", "RUN", "--out", "OUT", "--checkpoint", "last"]) == 0
    assert calls == [("RUN", dict(out="OUT", format="onnx", int8=False, checkpoint="last", threads=None))]
    p = manifest.parity
    assert capsys.readouterr().out.splitlines() == [
        f"parity: max |diff| {p.max_abs_diff:.1e}, top-1 agreement 100.0% on {p.inputs} val inputs "
        f"(batch sizes {', '.join(map(str, p.batch_sizes))})",
        f"export folder: {folder}",
    ]
    manifest.int8 = Int8(mode="static", file="model.int8.onnx", split="test", before={"loss": 0.5, "accuracy": 0.9},
                         after={"loss": 0.6, "accuracy": 0.87}, warnings=["int8 accuracy 0.8700 is 3.0 points below"])
    assert main(["export", "RUN", "--int8"]) == 0
    assert capsys.readouterr().out.splitlines()[1:3] == [
        "int8 (static): loss 0.5000 -> 0.6000, accuracy 0.9000 -> 0.8700 on test (`grove predict EXPORT_DIR --int8` runs it)",
        "warning: int8 accuracy 0.8700 is 3.0 points below",
    ]


def test_export_mistakes_are_one_line(capsys):
    from grove.cli import main

    assert main(["export", "RUN", "--format", "pt2", "--int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --int8") and err.count("\n") == 1


def test_the_int8_graph_runs_when_there_is_one(tiny_runs, tmp_path):
    from grove.errors import GroveError
    from grove.runtime.manifest import Int8, read_manifest, write_manifest
    from grove.runtime.predictor import ExportedPredictor

    folder = tiny_runs["image"][1]
    with pytest.raises(GroveError, match="no int8 graph: export again with --int8"):
        ExportedPredictor.load(folder, int8=True)
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    shutil.copy(copy / "model.onnx", copy / "model.int8.onnx")  # stands in for a quantised graph
    manifest = read_manifest(copy)
    manifest.int8 = Int8(mode="dynamic", file="model.int8.onnx", split="test", before={}, after={})
    write_manifest(copy, manifest)
    assert ExportedPredictor.load(copy).session.path == copy / "model.onnx"  # fp32 answers as the run does
    assert ExportedPredictor.load(copy, int8=True).session.path == copy / "model.int8.onnx"


def damaged(tmp_path, folder, file, change):
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    target = copy / file
    target.write_bytes(change(target.read_bytes()))
    return copy


@pytest.mark.parametrize(
    "file, change, message",
    [
        ("model.onnx", lambda b: b[: len(b) // 3], "model.onnx is not the graph export wrote"),
        ("model.onnx", lambda b: b[:-64] + bytes(64), "model.onnx is not the graph export wrote"),  # weights changed
        ("export.json", lambda b: b[: len(b) // 2], "export.json cannot be read"),
        ("export.json", lambda b: b.replace(b'"task": "classification"', b'"task": "detection"'), "is damaged: 'task'"),
        ("export.json", lambda b: b.replace(b'"name": "image"', b'"name": "pixels"'), "does not match"),
    ],
    ids=["truncated-graph", "changed-weights", "truncated-manifest", "tampered-manifest", "renamed-input"],
)
def test_a_damaged_export_is_one_error_line(tiny_runs, tiny_samples, tmp_path, file, change, message):
    copy = damaged(tmp_path, tiny_runs["image"][1], file, change)
    result = run_grove("predict", copy, tiny_samples["image"][0])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and "export the run again" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("change", [lambda b: b[: len(b) // 3], lambda b: b"\x00garbage" + b[64:]], ids=["truncated", "garbage"])
def test_a_broken_graph_without_a_digest_is_one_error_line(tiny_runs, tiny_samples, tmp_path, change):
    """Manifests of other writers may carry no digests: ONNX Runtime's refusal is then the one line."""
    copy = damaged(tmp_path, tiny_runs["image"][1], "model.onnx", change)
    manifest = json.loads((copy / "export.json").read_text())
    (copy / "export.json").write_text(json.dumps({**manifest, "sha256": {}}))
    result = run_grove("predict", copy, tiny_samples["image"][0])
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "model.onnx is not a graph ONNX Runtime can load" in result.stderr and "export the run again" in result.stderr


def test_an_edited_manifest_that_no_longer_fits_the_graph_is_one_line(tiny_runs, tiny_samples, tmp_path):
    import re

    copy = damaged(tmp_path, tiny_runs["image"][1], "export.json",
                   lambda b: re.sub(rb'"size": (\d+)', lambda m: b'"size": %d' % (int(m.group(1)) + 1), b))
    result = run_grove("predict", copy, tiny_samples["image"][0])
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "refused its inputs" in result.stderr and "export the run again" in result.stderr


def test_an_export_folder_that_lost_its_manifest_says_so(tiny_runs, tiny_samples, tmp_path):
    copy = damaged(tmp_path, tiny_runs["image"][1], "model.onnx", lambda b: b)
    (copy / "export.json").unlink()
    result = run_grove("predict", copy, tiny_samples["image"][0])
    assert result.returncode == 2 and "export.json is missing" in result.stderr and "export the run again" in result.stderr


def test_run_options_on_an_export_folder_are_refused(tiny_runs, tiny_samples):
    for option in (["--device", "cuda"], ["--checkpoint", "last"]):
        result = run_grove("predict", tiny_runs["image"][1], tiny_samples["image"][0], *option)
        assert result.returncode == 2 and "are for run directories" in result.stderr, result.stderr
    result = run_grove("predict", tiny_runs["image"][0], tiny_samples["image"][0], "--int8")
    assert result.returncode == 2 and "--int8 runs an export folder's int8 graph" in result.stderr
