"""Everything a report shows, from the run directory and one evaluation pass (`evaluate_run`)."""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from grove.data.base import SPLITS, StreamData, WindowData
from grove.engine.build import build_split
from grove.engine.evaluate import evaluate_run
from grove.engine.logging import plot_curves, plot_reliability
from grove.errors import GroveError
from grove.models.utils import estimate_flops
from grove.predictor import Predictor
from grove.report.calibration import calibration
from grove.report.samples import ClassifierSamples, Mistake, PromptSamples, TranscriptSamples
from grove.rundir import CONFIG, SKIPPED, SUMMARY, RunDir, RunMeta

# Language-model sample i: `grove generate RUN --prompt P --max-new-tokens 120 --temperature 0.8 --seed i`
GENERATE = {"max_new_tokens": 120, "temperature": 0.8}


@dataclass
class ShownMistake:
    name: str  # where the input came from
    true: str
    predicted: str
    confidence: float
    image: bytes | None = None  # the input as a PNG (images)
    text: str | None = None  # the input as text, or what the audio clip is
    explanation: object | None = None  # grove.explain's Explanation of the predicted class


@dataclass
class Sample:
    prompt: str
    seed: int
    continuation: str = ""
    error: str = ""


@dataclass
class ReportData:
    run: RunDir
    meta: RunMeta
    config_text: str  # config.yaml as the run saved it
    summary: dict
    figures: dict  # evaluate_run's result
    data_name: str
    data_options: dict  # the data set builder's options in the recipe
    splits: dict[str, str]  # split -> its size ("1,437 items")
    missing_splits: dict[str, str]  # split -> why it could not be built
    skipped: list[str]  # skipped_files.txt
    curves: list[bytes]  # plot_curves' PNGs
    confusion: bytes | None = None
    calibration: dict | None = None
    reliability: bytes | None = None
    mistakes: list[ShownMistake] = field(default_factory=list)
    explain_note: str = ""  # why mistakes have no explanations, when they have none
    transcripts: list[tuple[str, str]] = field(default_factory=list)  # (reference, hypothesis)
    samples: list[Sample] = field(default_factory=list)
    compute: dict = field(default_factory=dict)
    privacy: dict = field(default_factory=dict)


def gather(run: RunDir, device: str = "auto") -> ReportData:
    """One evaluation of the run's best checkpoint on its test split (val where there is none),
    with what the report needs of each sample collected in the same pass."""
    meta, summary = run.read_meta(), run.read_json(SUMMARY)
    predictor = Predictor.load(run.path, device=device)
    collector = _collector(meta)
    figures = evaluate_run(str(run.path), device=device, on_batch=collector)
    split, records = figures["split"], run.read_metrics()
    built = {s: _build(predictor, s) for s in SPLITS}
    data = ReportData(
        run=run, meta=meta, config_text=(run.path / CONFIG).read_text(), summary=summary, figures=figures,
        splits={s: _size(d) for s, d in built.items() if not isinstance(d, GroveError)},
        missing_splits={s: str(d) for s, d in built.items() if isinstance(d, GroveError)},
        skipped=(run.path / SKIPPED).read_text().splitlines() if (run.path / SKIPPED).is_file() else [],
        curves=[(run.plots / name).read_bytes() for name in plot_curves(run)],
        data_name=predictor.run.recipe.data.name, data_options=predictor.run.recipe.data.options(),
        compute=_compute(predictor, summary, records),
        privacy=summary.get("privacy", {}),
    )
    if "confusion_matrix" in figures:  # evaluate_run drew it
        data.confusion = (run.plots / f"confusion_{split}.png").read_bytes()
    if isinstance(collector, ClassifierSamples):
        data.calibration = calibration(torch.cat(collector.confidences), torch.cat(collector.correct))
        path = run.plots / f"reliability_{split}.png"
        plot_reliability(data.calibration["bins"], data.calibration["ece"], path)
        data.reliability = path.read_bytes()
        # Evaluation reads a split in order, so a position is an index unless unreadable files were skipped.
        source = None if isinstance(built[split], GroveError) or figures["skipped_files"] else built[split]
        names = [source.path(m.position) if source else f"{split} item {m.position}" for m in collector.mistakes]
        data.mistakes = [_shown(predictor, m, n) for m, n in zip(collector.mistakes, names)]
        data.explain_note = _explain(predictor, collector.mistakes, names, data.mistakes)
    elif isinstance(collector, TranscriptSamples):
        data.transcripts = collector.pairs
    else:
        data.samples = [_generate(predictor, ids, seed) for seed, ids in enumerate(collector.prompts)]
    return data


def _collector(meta: RunMeta):
    if meta.task == "ctc":
        return TranscriptSamples(meta.data["alphabet"])
    if meta.task == "lm":
        return PromptSamples()
    return ClassifierSamples(pad_id=meta.data["pad_id"] if meta.modality == "text" else None)


def _build(predictor: Predictor, split: str):
    """The split's data object, or the GroveError that says why it cannot be built (the data set
    has no such split, its files moved ...)."""
    loaded = predictor.run
    try:
        return build_split(loaded.recipe.data, split, loaded.dir, loaded.meta)[1]
    except GroveError as err:
        return err


def _size(data) -> str:
    if isinstance(data, WindowData):
        return f"{len(data.tokens):,} tokens"
    if isinstance(data, StreamData):
        return f"{data.inputs.numel():,} tokens"
    return f"{len(data):,} items"


def _shown(predictor: Predictor, mistake: Mistake, name: str) -> ShownMistake:
    classes = predictor.classes
    shown = ShownMistake(name, classes[mistake.target], classes[mistake.predicted], mistake.confidence)
    if predictor.modality == "image":
        pixels = mistake.item[0].permute(1, 2, 0).numpy()  # (H, W, C)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)).save(buffer, "PNG")
        shown.image = buffer.getvalue()
    elif predictor.modality == "text":
        shown.text = predictor.tokenizer.decode(mistake.item)
    else:
        shown.text = f"a {mistake.item.shape[-1] / predictor.data['sample_rate']:.2f} s audio clip"
    return shown


def _explain(predictor: Predictor, mistakes: list[Mistake], names: list[str], shown: list[ShownMistake]) -> str:
    """Puts each mistake's explanation of its predicted class in `shown`; returns why not when it cannot."""
    if not mistakes:
        return ""
    from grove.explain import explain_items

    try:
        found = explain_items(predictor, [m.item for m in mistakes], names, targets=[m.predicted for m in mistakes])
    except GroveError as err:  # Captum is missing, or the model cannot be explained
        return f"explanations are not available for this model: {err}"
    for item, explanation in zip(shown, found):
        item.explanation = explanation
    return ""


def _generate(predictor: Predictor, ids: list[int], seed: int) -> Sample:
    sample = Sample(predictor.tokenizer.decode(ids), seed)
    try:
        sample.continuation = "".join(predictor.generate(sample.prompt, **GENERATE, seed=seed))
    except GroveError as err:
        sample.error = str(err)
    return sample


def _compute(predictor: Predictor, summary: dict, records: list[dict]) -> dict:
    model = predictor.model
    rates = [r["samples_per_s"] for r in records if r.get("split") == "train" and "samples_per_s" in r]
    return {
        "params": summary["params"],
        "flops": estimate_flops(model),
        "example_input": tuple(model.example_input(1).shape),
        "train_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "epochs": summary["epochs"],
        "samples_per_s": statistics.median(rates) if rates else None,
        "device": summary["speed"]["device"],
        "processes": summary["processes"],
        "speed": summary["speed"]["explain"],
        **_latest(summary, records, ("mfu",)),
    }


def _latest(summary: dict, records: list[dict], keys: tuple[str, ...]) -> dict:
    """Each key's value in summary.json, else in the last metrics record that has it; absent keys left out."""
    found = {}
    for key in keys:
        if key in summary:
            found[key] = summary[key]
        else:
            values = [r[key] for r in records if key in r]
            if values:
                found[key] = values[-1]
    return found
