"""`export_run`: every model family exports with parity proven on the run's own held-out data, in
ONNX and pt2; a failed export leaves no folder behind; int8 reports metrics before and after.

Tiny runs (two training steps, small models): parity is about the plumbing, not accuracy.
"""

import json

import numpy as np
import pytest
import torch
import yaml

from grove.config import builtin_recipes, load_recipe
from grove.engine.loop import train
from grove.errors import GroveError
from grove.export import export_run
from grove.runtime.manifest import read_manifest

pytestmark = pytest.mark.e2e
pytest.importorskip("onnxruntime")

TINY = ["train.max_steps=2", "train.precision=fp32", "train.eval_every=null"]
SMALL_GPT = ["model.n_layer=2", "model.n_embd=32", "model.block_size=32", "data.block_size=32"]
# kind -> (recipe, overrides, a model section replacing the recipe's): one per model family and
# modality of the offline recipes
FAMILIES = {
    "image-cnn": ("digits-cnn", [], None),
    "image-transformer": ("digits-vit", ["model.depth=2", "model.dim=32", "model.heads=2"], None),
    "text-transformer": ("sentiment-demo-encoder", ["model.n_layer=1", "model.n_embd=32", "model.n_head=2"], None),
    "text-rnn": ("sentiment-demo-encoder", [], {"name": "rnn_classifier", "n_embd": 16, "n_hidden": 16, "n_layers": 2}),
    "lm-transformer": ("shakespeare-char-gpt", SMALL_GPT, None),
    "lm-rnn": ("shakespeare-char-lstm", ["model.n_embd=32", "model.n_hidden=32"], None),
    "audio-cnn": ("spoken-words-cnn", [], None),
    "audio-transformer": ("spoken-words-kwt", [], None),
    "audio-rnn": ("spoken-words-crnn", [], None),
    "ctc-rnn": ("spoken-digits-ctc", ["model.hidden=32"], None),
    "ctc-transformer": ("spoken-digits-ctc", [], {"name": "transformer_ctc", "dim": 32, "depth": 1, "heads": 2}),
}
SPEECH = {"audio-cnn", "audio-transformer", "audio-rnn", "ctc-rnn", "ctc-transformer"}  # espeak-ng voices


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """kind -> a tiny run directory, trained once for the module on first use."""
    base = tmp_path_factory.mktemp("export")
    made = {}

    def get(kind: str):
        if kind not in made:
            name, overrides, model = FAMILIES[kind]
            if model is not None:  # the recipe with another model: a recipe file of its own
                raw = yaml.safe_load(builtin_recipes()[name].read_text())
                name = base / f"{kind}.yaml"
                name.write_text(yaml.safe_dump({**raw, "model": model}))
            recipe, recipe_name = load_recipe(str(name), [f"run.dir={base / kind}", *TINY, *overrides])
            made[kind] = train(recipe, recipe_name)["run"]
        return made[kind]

    return get


@pytest.mark.parametrize("kind", [pytest.param(k, marks=[pytest.mark.espeak] if k in SPEECH else []) for k in FAMILIES])
def test_every_family_exports_to_onnx_with_parity(trained, kind, tmp_path):
    out, manifest = export_run(trained(kind), out=tmp_path / "export")
    assert manifest.parity.max_abs_diff <= 1e-4 and manifest.parity.top1_agreement == 1.0
    assert manifest.parity.split == "val" and manifest.parity.batch_sizes[:2] == [1, 7]
    assert read_manifest(out) == manifest  # what was written is what was returned
    assert (out / "model.onnx").is_file() and not list(tmp_path.glob(".staging*"))
    first = manifest.inputs[0]
    assert first.shape[0] == "batch"
    if manifest.modality == "text":
        assert (out / "tokenizer").is_dir() and first.name == "input_ids" and first.shape[1] == "tokens"
    if manifest.task == "ctc":
        assert [t.name for t in manifest.inputs] == ["audio", "lengths"] and first.shape[1] == "samples"
        assert manifest.preprocess.audio.clip_samples is None
    if manifest.modality == "image":
        assert first.dtype == "uint8" and manifest.preprocess.image.size == first.shape[-1]


def test_pt2_export_runs_without_grove_model_code(trained, tmp_path):
    run = trained("lm-transformer")
    out, manifest = export_run(run, out=tmp_path / "pt2", format="pt2")
    assert manifest.format == "pt2" and manifest.parity.max_abs_diff <= 1e-4
    program = torch.export.load(str(out / "model.pt2")).module()
    g = manifest.generation
    past = torch.zeros(g.n_layer, 1, g.n_head, 0, g.head_dim)
    logits, keys, values = program(torch.tensor([[1, 2, 3]]), past, past.clone())
    assert logits.shape[:2] == (1, 3) and keys.shape[3] == 3  # the cache grew by the prompt


def test_image_graph_takes_uint8_and_normalises_inside(trained, tmp_path):
    import onnxruntime as ort

    out, manifest = export_run(trained("image-cnn"), out=tmp_path / "export")
    pre = manifest.preprocess.image
    session = ort.InferenceSession(str(out / "model.onnx"))
    image = np.random.default_rng(0).integers(0, 256, (3, pre.channels, pre.size, pre.size), dtype=np.uint8)
    logits = session.run(None, {"image": image})[0]
    assert logits.shape == (3, len(manifest.classes)) and np.isfinite(logits).all()


def test_failed_parity_leaves_no_folder(trained, tmp_path, monkeypatch):
    import grove.export.parity as parity

    monkeypatch.setattr(parity, "MAX_ABS_DIFF", -1.0)  # no graph can pass
    with pytest.raises(GroveError, match="export parity failed"):
        export_run(trained("image-cnn"), out=tmp_path / "export")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a staging leftover


def test_export_again_replaces_an_export_but_not_other_folders(trained, tmp_path):
    out = tmp_path / "export"
    export_run(trained("image-cnn"), out=out)
    (out / "model.onnx").write_bytes(b"stale")
    export_run(trained("image-cnn"), out=out)
    assert (out / "model.onnx").read_bytes() != b"stale"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(GroveError, match="is not an export folder"):
        export_run(trained("image-cnn"), out=other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_out_never_deletes_what_export_did_not_write(trained, tmp_path):
    out = tmp_path / "export"
    export_run(trained("image-cnn"), out=out)
    (out / "NOTES.md").write_text("mine")
    with pytest.raises(GroveError, match=r"holds files an export does not write \(NOTES.md\)"):
        export_run(trained("image-cnn"), out=out)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(GroveError, match="is a file: pass a folder"):
        export_run(trained("image-cnn"), out=tmp_path / "afile")


def test_output_shapes_keep_their_dynamic_axes(trained, tmp_path):
    _, manifest = export_run(trained("lm-transformer"), out=tmp_path / "onnx")
    _, pt2 = export_run(trained("lm-transformer"), out=tmp_path / "pt2", format="pt2")
    for m in (manifest, pt2):
        logits, keys, _ = m.outputs
        assert logits.shape[:2] == ["batch", "tokens"] and keys.shape[1] == "batch"
        assert isinstance(keys.shape[3], str) and "past" in keys.shape[3] and "tokens" in keys.shape[3]


def test_bad_options_are_one_line(trained, tmp_path):
    with pytest.raises(GroveError, match="--format must be one of onnx, pt2"):
        export_run(trained("image-cnn"), out=tmp_path / "x", format="tflite")
    with pytest.raises(GroveError, match="--int8 quantises ONNX graphs"):
        export_run(trained("image-cnn"), out=tmp_path / "x", format="pt2", int8=True)
    with pytest.raises(GroveError, match="does not exist"):
        export_run(tmp_path / "no-such-run")


@pytest.mark.parametrize("kind, mode", [("image-cnn", "static"), ("text-transformer", "dynamic")])
def test_int8_reports_metrics_before_and_after(trained, kind, mode, tmp_path):
    out, manifest = export_run(trained(kind), out=tmp_path / "export", int8=True)
    q = manifest.int8
    assert q.mode == mode and (out / q.file).is_file() and manifest.runtime_file(int8=True) == q.file
    assert q.split == "test" and set(q.before) == set(q.after) and "accuracy" in q.before
    assert (mode == "static") == (q.calibration_inputs > 0)
    assert q.parity is not None and q.parity.top1_agreement > 0.5  # int8 is judged by metrics, but measured
    saved = json.loads((out / "export.json").read_text())
    assert saved["int8"]["after"] == q.after
