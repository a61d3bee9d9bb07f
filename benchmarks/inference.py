"""Inference speed of every offline recipe's model: eager PyTorch against ONNX Runtime fp32 and int8.

    python benchmarks/inference.py                         # trains each recipe briefly, then measures
    python benchmarks/inference.py --runs runs/digits-cnn/20261201-101500 runs/shakespeare-char-gpt/...
    python benchmarks/inference.py --models cnn gpt --train-steps 200 --json /tmp/inference.json
    python benchmarks/inference.py --seconds 6             # quicker, noisier timing
    python benchmarks/inference.py --threads 1             # torch and ORT threads (default: physical cores)

Run time: 1,656 s (28 min) with 60 training steps on a shared 2-core AMD EPYC (other processes on
about 1 core), most of it training under contention (ctc 367 s, minilm 195 s: that run's training
subprocesses still had the default OpenMP wait policy; they now get OMP_WAIT_POLICY=PASSIVE unless
it is set, which changes scheduling, not weights); with --runs (no training), at --threads 1, 389 s.
On a machine other processes share, the eager figures at the default threads are mostly OpenMP
threads waiting for each other (see benchmarks/RESULTS.md, "Inference"): compare --threads 1.

The models (--models picks some): cnn (digits-cnn), resnet (digits-cnn with model.name=resnet18
model.stem=cifar: the registry's ResNet-18 takes in_channels and image_size from the data, so it
trains on the bundled 8x8 grey digits; CIFAR-10 would need a download), vit (digits-vit), lstm
(shakespeare-char-lstm), gpt (shakespeare-char-gpt), encoder (sentiment-demo-encoder), kws-cnn
(spoken-words-cnn), kws-kwt (spoken-words-kwt), ctc (spoken-digits-ctc), minilm
(sentiment-demo-minilm). Without --runs each is trained for --train-steps optimiser steps
(`grove train RECIPE train.max_steps=N run.dir=...` in a subprocess) into --work (default: a
temporary folder, removed at the end); with --runs the runs' own models are used (told apart by
their model name). Each run is exported with `export_run(run, int8=True)` into --work: model.onnx
and model.int8.onnx.

Variants, all of one model measured in the same rounds, in one process:
- eager fp32: the export wrapper (`graph_for`: the model behind its preprocessing, exactly what is
  traced) under torch.no_grad, torch.set_num_threads(physical cores);
- eager bf16: the same under torch.autocast(bfloat16), only on a CPU with native bf16
  (grove.engine.precision.native_bf16); "n/a (no native bf16)" elsewhere;
- ORT fp32 / ORT int8: model.onnx / model.int8.onnx through grove.runtime.session.open_session,
  intra-op threads = physical cores, as `grove.load` runs them.

Workloads (inputs are the run's own held-out inputs, as the graph takes them: uint8 images,
float waveforms, token ids):
- classifiers: one input (a text without its padding) for latency; a batch of 32 for throughput;
- ctc: one utterance at its own length; a padded batch of 32 utterances (utterances/s);
- language models, two rows: "decode", one incremental step of one new token after a prompt of
  block_size - 1 (GPT: 63) tokens, the key/value caches or LSTM states being the ones that prompt
  left (so the cache is as long as it gets); batch 32 = 32 sequences one step each (tokens/s =
  32 per call); and "prefill", the whole 63-token prompt from an empty state (batch 32: 32 x 63
  tokens per call).

Timing: a warm-up (5 calls at batch 1, 2 at batch 32) per variant, then rounds until --seconds
per workload (at least 3): in each, every variant in turn (the order rotates) makes 2 untimed calls
(the previous runtime's threads may still be spinning), then batch-1 calls for --block seconds,
each timed, then batch-32 calls for --block seconds. p50/p99 are over all timed batch-1 calls;
batch-32 items/s is items per call over the median call. "x eager" is eager fp32 p50 / variant p50
at batch 1 and variant items/s / eager items/s at batch 32 (above 1: faster than eager fp32).

Metrics are on the test split (val where the data set has none, as for tiny_shakespeare): eager
fp32 (and bf16) through grove.engine.evaluate.evaluate with the eager model and the same loader
`grove.export._graph_metrics` builds; ORT fp32 and int8 are `_graph_metrics` as export_run
measured them (export.json's int8.before/after), through the same evaluation loop.

The header prints the CPU model and its bf16 hardware (benchmarks/machine.py), and each model's
line how busy other processes kept the machine during its timed rounds (from /proc/stat).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path

import numpy as np
import torch

from grove.engine.precision import cpu_info, native_bf16
from grove.runtime.session import physical_cores

sys.path.insert(0, os.path.dirname(__file__))
from machine import cpu_busy_seconds, machine_line, train_run  # noqa: E402

# key -> (recipe, overrides, registry model name)
MODELS = {
    "cnn": ("digits-cnn", [], "seed_cnn"),
    "resnet": ("digits-cnn", ["model.name=resnet18", "model.stem=cifar", "run.name=digits-resnet18"], "resnet18"),
    "vit": ("digits-vit", [], "vit"),
    "lstm": ("shakespeare-char-lstm", [], "lstm_lm"),
    "gpt": ("shakespeare-char-gpt", [], "gpt"),
    "encoder": ("sentiment-demo-encoder", [], "encoder_classifier"),
    "kws-cnn": ("spoken-words-cnn", [], "ds_cnn"),
    "kws-kwt": ("spoken-words-kwt", [], "kwt"),
    "ctc": ("spoken-digits-ctc", [], "conv_rnn_ctc"),
    "minilm": ("sentiment-demo-minilm", [], "hf_classifier"),
}
VARIANTS = ("eager fp32", "eager bf16", "ORT fp32", "ORT int8")
BATCH = 32
METRIC = {"classification": "accuracy", "lm": "perplexity", "ctc": "cer"}


@dataclass
class Workload:
    label: str  # e.g. "images", "decode step (past 63)"
    unit: str  # what batch-32 items/s counts
    one: list[np.ndarray]  # batch-1 inputs, in the graph's input order
    many: list[np.ndarray]  # batch-32 inputs
    items: int  # items in one batch-32 call
    latency: dict = field(default_factory=dict)  # variant -> seconds per batch-1 call, every call
    batch: dict = field(default_factory=dict)  # variant -> seconds per batch-32 call, every call
    others: float = float("nan")  # cores other processes kept busy during the rounds


@dataclass
class Result:
    key: str
    recipe: str
    run: str = ""
    task: str = ""
    split: str = ""
    int8_mode: str = ""
    metrics: dict = field(default_factory=dict)  # variant -> the task's metric
    workloads: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)  # stage -> exact message
    train_seconds: float = 0.0
    export_seconds: float = 0.0


# -- runs ----------------------------------------------------------------------------------------
def train(key: str, steps: int, work: Path) -> Path:
    recipe, overrides, _ = MODELS[key]
    return train_run(recipe, work, [f"train.max_steps={steps}", *overrides], log_name=key)


def key_of(run: Path) -> str:
    meta = json.loads((run / "meta.json").read_text())
    name = meta["model"]["name"]
    for key, (_, _, model) in MODELS.items():
        if model == name:
            return key
    raise SystemExit(f"{run}: model '{name}' is none of this benchmark's ({', '.join(MODELS)})")


# -- inputs --------------------------------------------------------------------------------------
def workloads(loaded, spec) -> list[Workload]:
    from grove.export import _held_out_batch
    from grove.export.graphs import empty_state
    from grove.export.parity import graph_inputs

    task, modality = loaded.meta.task, loaded.meta.modality
    _, batch = _held_out_batch(loaded, BATCH, "val")
    inputs = graph_inputs(task, modality, batch)
    if inputs[0].shape[0] < BATCH:  # a small split: repeat its inputs up to 32
        reps = -(-BATCH // inputs[0].shape[0])
        inputs = [x.repeat_interleave(reps, dim=0)[:BATCH] for x in inputs]
    arrays = [x.numpy() for x in inputs]
    if task == "ctc":
        audio, lengths = arrays
        one = [np.ascontiguousarray(audio[:1, : int(lengths[0])]), lengths[:1].copy()]
        return [Workload("utterances", "utterances/s", one, arrays, BATCH)]
    if task == "classification":
        one = [a[:1].copy() for a in arrays]
        pad = loaded.meta.data.get("pad_id")
        if modality == "text" and pad is not None:  # a lone text runs without padding
            real = np.nonzero(one[0][0] != pad)[0]
            one = [one[0][:, : int(real[-1]) + 1 if real.size else 1].copy()]
        unit = {"image": "images/s", "audio": "clips/s", "text": "texts/s"}[modality]
        return [Workload(unit.removesuffix("/s"), unit, one, arrays, BATCH)]
    # language models: a prompt, then one decode step with the state the prompt left
    ids = inputs[0]
    limit = spec.generation.get("block_size") or ids.shape[1]
    prompt = min(limit, ids.shape[1]) - 1
    empty = empty_state(spec, BATCH)
    with torch.no_grad():
        outputs = spec.module.eval()(ids[:, :prompt], *empty)
    state = [s.numpy() for s in outputs[1:]]
    step = ids[:, prompt : prompt + 1].numpy().copy()
    state_of = lambda k: [np.ascontiguousarray(s[:, :k]) for s in state]  # batch is axis 1
    empty_of = lambda k: [s[:, :k].numpy().copy() for s in empty]
    prefix = ids[:, :prompt].numpy().copy()
    return [
        Workload(f"decode step (past {prompt})", "tokens/s", [step[:1], *state_of(1)], [step, *state_of(BATCH)], BATCH),
        Workload(f"prefill {prompt} tokens", "tokens/s", [prefix[:1], *empty_of(1)], [prefix, *empty_of(BATCH)],
                 BATCH * prompt),
    ]


# -- the variants --------------------------------------------------------------------------------
def eager_call(module, arrays: list[np.ndarray], bf16: bool):
    tensors = [torch.from_numpy(a) for a in arrays]
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def call():
        with torch.no_grad(), context():
            return module(*tensors)

    return call


def ort_call(session, names: list[str], arrays: list[np.ndarray]):
    feeds = dict(zip(names, arrays))
    return lambda: session.run(feeds)


def measure(w: Workload, calls: dict, seconds: float, block: float) -> None:
    """Interleaved rounds of every variant's batch-1 and batch-32 calls (see the docstring)."""
    for one, many in calls.values():
        for _ in range(5):
            one()
        for _ in range(2):
            many()
    w.latency = {v: [] for v in calls}
    w.batch = {v: [] for v in calls}
    busy0, own0, wall0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    names, r = list(calls), 0
    clock = time.perf_counter
    while r < 3 or clock() - wall0 < seconds:
        for v in names[r % len(names):] + names[: r % len(names)]:
            one, many = calls[v]
            one(), one()  # untimed: the other runtime's threads may still spin
            end = clock() + block
            while True:
                t = clock()
                one()
                now = clock()
                w.latency[v].append(now - t)
                if now >= end:
                    break
            end = clock() + block
            while True:
                t = clock()
                many()
                now = clock()
                w.batch[v].append(now - t)
                if now >= end:
                    break
        r += 1
    wall = clock() - wall0
    w.others = (cpu_busy_seconds() - busy0 - (time.process_time() - own0)) / wall


# -- metrics -------------------------------------------------------------------------------------
def eager_metrics(loaded, precision: str) -> dict:
    """The eager model's metrics on the split and with the loader `_graph_metrics` uses."""
    from grove.data.loader import BatchLoader
    from grove.engine.build import build_split
    from grove.engine.evaluate import evaluate
    from grove.engine.precision import Speed

    recipe = loaded.recipe
    split, data = build_split(recipe.data, None, loaded.dir, loaded.meta)
    loader = BatchLoader(data, recipe.data.eval_batch_size or 64, train=False, device=torch.device("cpu"))
    speed = Speed("cpu", precision, channels_last=False, compile=False, keep_freed_memory=False)
    figures = evaluate(loaded.model, loader, loaded.task, loaded.transform, speed)
    return {"split": split, **{k: v for k, v in figures.items() if isinstance(v, float)}}


# -- one model -----------------------------------------------------------------------------------
def bench(key: str, run: Path | None, args, work: Path, bf16: bool) -> Result:
    from grove.export import _graph_metrics, export_run
    from grove.export.graphs import graph_for
    from grove.rundir import load_run
    from grove.runtime.session import open_session

    res = Result(key, MODELS[key][0])
    if run is None:
        t = time.perf_counter()
        try:
            run = train(key, args.train_steps, work)
        except Exception as err:  # noqa: BLE001 - reported, the other models go on
            res.errors["train"] = str(err)
            return res
        res.train_seconds = time.perf_counter() - t
        print(f"  {key}: trained {args.train_steps} steps in {res.train_seconds:.0f} s -> {run}", file=sys.stderr)
    res.run = str(run)
    threads = args.threads or physical_cores()
    out = work / "exports" / f"{key}-{run.parent.name}-{run.name}"
    t = time.perf_counter()
    manifest = None
    try:
        _, manifest = export_run(run, out=out, int8=True, threads=threads)
    except Exception as err:  # noqa: BLE001
        res.errors["export --int8"] = f"{type(err).__name__}: {err}"
        try:
            _, manifest = export_run(run, out=out, int8=False, threads=threads)
        except Exception as err2:  # noqa: BLE001
            res.errors["export"] = f"{type(err2).__name__}: {err2}"
    res.export_seconds = time.perf_counter() - t
    print(f"  {key}: exported in {res.export_seconds:.0f} s{' (errors)' if res.errors else ''}", file=sys.stderr)

    torch.set_num_threads(threads)
    loaded = load_run(run, "best", "cpu")
    spec = graph_for(loaded)
    res.task, metric = loaded.meta.task, METRIC[loaded.meta.task]
    module = spec.module.eval()

    sessions = {}
    if manifest is not None:
        sessions["ORT fp32"] = open_session(out / manifest.file, "onnx", threads)
        if manifest.int8 is not None:
            sessions["ORT int8"] = open_session(out / manifest.int8.file, "onnx", threads)
            res.int8_mode = manifest.int8.mode

    # metrics
    figures = eager_metrics(loaded, "fp32")
    res.split = figures["split"]
    res.metrics["eager fp32"] = figures.get(metric)
    if bf16:
        res.metrics["eager bf16"] = eager_metrics(loaded, "bf16").get(metric)
    if manifest is not None and manifest.int8 is not None:
        res.metrics["ORT fp32"] = manifest.int8.before.get(metric)
        res.metrics["ORT int8"] = manifest.int8.after.get(metric)
    elif "ORT fp32" in sessions:
        s = sessions["ORT fp32"]
        res.metrics["ORT fp32"] = _graph_metrics(loaded, spec, lambda a: s.run(dict(zip(spec.input_names, a)))).get(metric)

    # timing
    for w in workloads(loaded, spec):
        calls = {"eager fp32": (eager_call(module, w.one, False), eager_call(module, w.many, False))}
        if bf16:
            calls["eager bf16"] = (eager_call(module, w.one, True), eager_call(module, w.many, True))
        for v, s in sessions.items():
            calls[v] = (ort_call(s, spec.input_names, w.one), ort_call(s, spec.input_names, w.many))
        measure(w, calls, args.seconds, args.block)
        res.workloads.append(w)
    return res


# -- the table -----------------------------------------------------------------------------------
def p50(w: Workload, v: str) -> float:
    return float(np.percentile(w.latency[v], 50))


def rate(w: Workload, v: str) -> float:
    return w.items / float(np.median(w.batch[v]))


def fmt_metric(task: str, value) -> str:
    if value is None:
        return "-"
    if task == "lm":
        return f"ppl {value:.3f}"
    if task == "ctc":
        return f"CER {100 * value:.2f}%"
    return f"acc {100 * value:.2f}%"


def drop(task: str, base, other) -> str:
    if base is None or other is None:
        return "n/a"
    if task == "lm":
        return f"{other - base:+.3f} ppl ({100 * (other / base - 1):+.1f}%)"
    if task == "ctc":
        return f"{100 * (other - base):+.2f} points CER"
    return f"{100 * (base - other):.2f} points accuracy"


def table(results: list[Result], bf16: bool) -> list[str]:
    lines = ["| model | variant | p50 ms | p99 ms | batch-32 items/s | x eager b1 | x eager b32 | metric |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        for w in r.workloads:
            name = f"{r.key} ({r.recipe}): {w.label}, {w.unit}"
            for v in VARIANTS:
                if v == "eager bf16" and not bf16:
                    lines.append(f"| {name} | {v} | n/a (no native bf16) | | | | | |")
                    continue
                if v not in w.latency:
                    why = "fails (see errors)" if r.errors else "-"
                    lines.append(f"| {name} | {v} | {why} | | | | | |")
                    continue
                b1 = p50(w, "eager fp32") / p50(w, v)
                b32 = rate(w, v) / rate(w, "eager fp32")
                lines.append(
                    f"| {name} | {v} | {1e3 * p50(w, v):.3f} | {1e3 * float(np.percentile(w.latency[v], 99)):.3f} "
                    f"| {rate(w, v):,.0f} | {b1:.2f}x | {b32:.2f}x | {fmt_metric(r.task, r.metrics.get(v))} |"
                )
    return lines


def summaries(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        if not r.workloads:
            lines.append(f"{r.key}: not measured ({'; '.join(f'{k}: {v}' for k, v in r.errors.items())})")
            continue
        for w in r.workloads:
            head = f"{r.key}" + (f" {w.label}" if r.task == "lm" else "")
            parts = []
            if "ORT fp32" in w.latency:
                parts.append(f"ORT fp32 / eager at batch 1: {p50(w, 'eager fp32') / p50(w, 'ORT fp32'):.1f}x "
                             f"(batch 32: {rate(w, 'ORT fp32') / rate(w, 'eager fp32'):.1f}x)")
            if "ORT int8" in w.latency:
                parts.append(f"int8 / ORT fp32: {p50(w, 'ORT fp32') / p50(w, 'ORT int8'):.1f}x "
                             f"(batch 32: {rate(w, 'ORT int8') / rate(w, 'ORT fp32'):.1f}x; {r.int8_mode})")
                parts.append(f"metric drop {drop(r.task, r.metrics.get('eager fp32'), r.metrics.get('ORT int8'))} "
                             f"(int8 vs eager fp32, {r.split})")
            parts.append(f"others busy {w.others:.2f} cores")
            lines.append(f"{head}: " + "; ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=None, help="a subset (default: all)")
    parser.add_argument("--runs", nargs="+", type=Path, default=None, help="trained run directories to use")
    parser.add_argument("--train-steps", type=int, default=60, help="steps per recipe when training here")
    parser.add_argument("--work", type=Path, default=None, help="where runs and exports go (default: a temp folder)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed rounds per workload (at least 3 rounds)")
    parser.add_argument("--block", type=float, default=0.15, help="seconds of calls per variant, batch size and round")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and ONNX Runtime threads (default: the physical cores)")
    parser.add_argument("--json", type=Path, default=None, help="save every figure here")
    args = parser.parse_args()

    started = time.perf_counter()
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    bf16, bf16_why = native_bf16(cpu_info())
    if args.runs:
        runs = {}
        for run in args.runs:
            runs.setdefault(key_of(run), run)
        keys = [k for k in MODELS if k in runs and (args.models is None or k in args.models)]
    else:
        runs = {}
        keys = args.models or list(MODELS)
        keys = [k for k in MODELS if k in keys]
    work = args.work or Path(tempfile.mkdtemp(prefix="grove-inference-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_line()}")
    print(f"threads: torch {torch.get_num_threads()}, ONNX Runtime intra-op {threads} "
          f"({physical_cores()} physical cores); "
          f"native bf16: {'yes' if bf16 else 'no'} ({bf16_why}); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    print(f"models: {', '.join(keys)}; "
          + ("runs given" if args.runs else f"trained {args.train_steps} steps each into {work}") + "\n")

    results = []
    try:
        for key in keys:
            try:
                results.append(bench(key, runs.get(key), args, work, bf16))
            except Exception as err:  # noqa: BLE001 - one model's failure is reported, not fatal
                traceback.print_exc()
                results.append(Result(key, MODELS[key][0], errors={"benchmark": f"{type(err).__name__}: {err}"}))
            print(f"  {key}: done, {time.perf_counter() - started:.0f} s so far", file=sys.stderr)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print("\n".join(table(results, bf16)))
    print("\n(x eager: eager fp32 p50 / variant p50 at batch 1, variant items/s / eager fp32 items/s at batch 32; "
          "above 1 is faster than eager fp32; metric drop: positive is worse)\n")
    print("\n".join(summaries(results)))
    errors = [(r.key, stage, msg) for r in results for stage, msg in r.errors.items()]
    if errors:
        print("\nerrors:")
        for key, stage, msg in errors:
            print(f"  {key}, {stage}: {msg}")
    total = time.perf_counter() - started
    print(f"\nwhole run {total:.0f} s ({date.today().isoformat()})")
    if args.json:
        doc = {
            "machine": machine_line(), "date": date.today().isoformat(), "command": " ".join(sys.argv),
            "threads": threads, "native_bf16": bf16, "seconds": total,
            "results": [
                {**{f.name: getattr(r, f.name) for f in fields(r) if f.name != "workloads"},
                 "workloads": [
                     {"label": w.label, "unit": w.unit, "items": w.items, "others_busy_cores": w.others,
                      "variants": {v: {"p50_ms": 1e3 * p50(w, v), "p99_ms": 1e3 * float(np.percentile(w.latency[v], 99)),
                                       "batch1_calls": len(w.latency[v]), "batch32_items_per_s": rate(w, v),
                                       "batch32_calls": len(w.batch[v])} for v in w.latency}}
                     for w in r.workloads]}
                for r in results
            ],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
