"""`grove <command>`: parses arguments, calls the library, prints. Nothing imports this module."""

from __future__ import annotations

import argparse
import json
import os
import sys

from grove import __version__
from grove.errors import GroveError


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # Recipe overrides may come after options such as --nproc, where argparse leaves them over.
    if getattr(args, "overrides", None) is not None and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # `grove ... | head` closed the pipe: what was asked for is printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except GroveError as err:
        if os.environ.get("RANK", "0") == "0":  # one line, not one per process
            print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = "; `grove train --resume RUN_DIR` continues from the last checkpoint" if args.run is cmd_train else ""
        print(f"interrupted{resume}", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grove", description="Train, evaluate and use CNN, RNN and Transformer models.")
    p.add_argument("--version", action="version", version=f"grove {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train from a recipe (name or YAML path), or --resume a run")
    t.add_argument("recipe", nargs="?", help="built-in recipe name (see `grove recipes`) or a YAML file")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides, e.g. train.epochs=5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--nproc", type=positive, default=1, help="data-parallel processes on this machine")
    t.add_argument("--nnodes", default="1", help="machines taking part (torchrun's --nnodes)")
    t.add_argument("--node-rank", type=int, default=0, help="this machine's rank, with --rdzv-endpoint")
    t.add_argument("--rdzv-endpoint", help="HOST:PORT of the rendezvous, for several machines")
    t.set_defaults(run=cmd_train)

    e = sub.add_parser("evaluate", help="metrics of a run's checkpoint on a split")
    e.add_argument("run_dir")
    e.add_argument("--split", help="train, val or test (default: test, or val where there is no test split)")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print the full result as JSON")
    e.set_defaults(run=cmd_evaluate)

    r = sub.add_parser("predict", help="labels (top-k) or transcripts for images, texts or audio files")
    r.add_argument("run_dir", metavar="RUN_OR_EXPORT", help="a run directory, or an export folder (`grove export`)")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image or WAV/FLAC files, or texts for a text classifier")
    r.add_argument("--beam-width", type=int, default=8, help="CTC beam search width (0: greedy)")
    r.add_argument("--top-k", type=positive, default=5)
    r.add_argument("--json", action="store_true")
    add_loading_options(r)
    r.set_defaults(run=cmd_predict)

    g = sub.add_parser("generate", help="continue a prompt with a language-model run, streaming tokens")
    g.add_argument("run_dir", metavar="RUN_OR_EXPORT", help="a run directory, or an export folder (`grove export`)")
    g.add_argument("--prompt", default="\n")
    g.add_argument("--max-new-tokens", type=positive, default=300)
    g.add_argument("--temperature", type=float, default=0.8, help="0 picks the most probable token")
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--seed", type=int)
    add_loading_options(g)
    g.set_defaults(run=cmd_generate)

    x = sub.add_parser("export", help="a run as an ONNX (or torch.export) graph with its preprocessing, checked for parity")
    x.add_argument("run_dir")
    x.add_argument("--format", default="onnx", choices=["onnx", "pt2"], help="onnx runs without torch; pt2 is torch.export")
    x.add_argument("--int8", action="store_true", help="also write model.int8.onnx and compare its metrics with fp32")
    x.add_argument("--out", metavar="DIR", help="the export folder (default: RUN/export, RUN/export-pt2 for pt2)")
    x.add_argument("--checkpoint", default="best", choices=["best", "last"])
    x.add_argument("--threads", type=positive, help="ONNX Runtime threads for the parity and int8 checks")
    x.set_defaults(run=cmd_export)

    v = sub.add_parser("serve", help="an HTTP server (REST API with dynamic batching, demo page) for runs and exports")
    v.add_argument("paths", nargs="+", metavar="[NAME=]RUN_OR_EXPORT", help="run directories or export folders")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    v.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    v.add_argument("--max-batch", type=positive, default=32, help="inputs per forward pass, at most")
    v.add_argument("--max-delay-ms", type=float, default=5.0, help="how long a request may wait for its batch to fill")
    v.add_argument("--queue", type=positive, default=256, help="inputs waiting per model before 503")
    v.add_argument("--timeout", type=float, default=30.0, help="seconds until a request gets 504")
    v.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body")
    v.add_argument("--api-key-env", metavar="NAME", help="require the API key held in this environment variable")
    v.add_argument("--device", help="run directories only: auto (default), cpu, cuda, cuda:N")
    v.add_argument("--int8", action="store_true", help="export folders only: run their int8 graphs")
    v.add_argument("--threads", type=positive, help="CPU threads per model (default: ONNX Runtime the physical cores)")
    v.set_defaults(run=cmd_serve)

    rp = sub.add_parser("report", help="one self-contained HTML page about a finished run")
    rp.add_argument("run_dir", metavar="RUN")
    rp.add_argument("--out", metavar="FILE.html", help="where to write it (default: RUN/report.html)")
    rp.add_argument("--device", default="auto")
    rp.set_defaults(run=cmd_report)

    xp = sub.add_parser("explain", help="why a run's model decided: attributions, a picture, a deletion score")
    xp.add_argument("run_dir", metavar="RUN")
    xp.add_argument("inputs", nargs="+", metavar="INPUT", help="image or WAV/FLAC files, texts, or prompts for a language model")
    xp.add_argument("--method", default="auto", help="auto, ig, saliency, gradcam, occlusion or attention")
    xp.add_argument("--target", metavar="LABEL", help="explain this label (a language model: this next token), not the predicted one")
    xp.add_argument("--out", metavar="DIR", help="where pictures and attributions go (default: RUN/explanations)")
    xp.add_argument("--json", action="store_true")
    xp.add_argument("--checkpoint", default="best", choices=["best", "last"])
    xp.add_argument("--device", default="auto")
    xp.set_defaults(run=cmd_explain)

    au = sub.add_parser("audit", help="membership-inference attacks: how much a run's model gives away about its training data")
    au.add_argument("run_dir", metavar="RUN")
    au.add_argument("--checkpoint", default="best", choices=["best", "last"])
    au.add_argument("--members", type=int, default=1000, help="training examples audited, at most (as many held-out ones)")
    au.add_argument("--seed", type=int, default=0, help="draws the audited examples and the reference model's data")
    au.add_argument("--reference-steps", type=int, default=300, help="training steps of the reference model, at most")
    au.add_argument("--no-reference", action="store_true", help="the loss attack alone: no reference model to train")
    au.add_argument("--device", default="auto")
    au.add_argument("--json", action="store_true", help="print the full result as JSON")
    au.set_defaults(run=cmd_audit)

    sub.add_parser("recipes", help="list the built-in recipes").set_defaults(run=cmd_recipes)
    sub.add_parser("models", help="list the registered models").set_defaults(run=cmd_models)
    sub.add_parser("datasets", help="list the registered data sets").set_defaults(run=cmd_datasets)
    return p


def add_loading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", choices=["best", "last"], help="run directories only (default: best)")
    p.add_argument("--device", help="run directories only: auto (default), cpu, cuda, cuda:N")
    p.add_argument("--int8", action="store_true", help="export folders only: run the int8 graph (`grove export --int8`)")
    p.add_argument("--threads", type=positive, help="CPU threads (default: ONNX Runtime the physical cores, PyTorch its own)")


def load(args):
    """grove.load with the loading options that fit what args.run_dir is."""
    import grove
    from grove.runtime.manifest import is_export_dir

    if is_export_dir(args.run_dir):
        if args.checkpoint or args.device:
            raise GroveError("--checkpoint and --device are for run directories: an export folder runs its one graph "
                             "on ONNX Runtime (drop them, or pass the run directory)")
        return grove.load(args.run_dir, threads=args.threads, int8=args.int8)
    if args.int8:
        raise GroveError("--int8 runs an export folder's int8 graph: export with `grove export RUN --int8` and pass that folder")
    return grove.load(args.run_dir, checkpoint=args.checkpoint or "best", device=args.device or "auto", threads=args.threads)


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_train(args) -> int:
    from grove.config import load_recipe
    from grove.engine import distributed
    from grove.engine.loop import train
    from grove.rundir import RunDir

    if args.resume:
        if args.recipe or args.overrides:
            raise GroveError("--resume continues a run with its saved recipe: give the run directory alone")
        run = RunDir.open(args.resume)
        name, recipe = run.read_meta().recipe, run.read_recipe()
    elif args.recipe:
        recipe, name = load_recipe(args.recipe, args.overrides)
    else:
        raise GroveError("name a recipe (`grove recipes` lists them) or pass --resume RUN_DIR")
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        argv = ["train", *( ["--resume", args.resume] if args.resume else [args.recipe, *args.overrides])]
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        try:
            distributed.launch(argv, args.nproc, args.nnodes, args.node_rank, args.rdzv_endpoint)
        except ChildFailedError:
            raise GroveError("a training process failed; its message is above") from None
        return 0
    summary = train(recipe, name, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    speed = summary["speed"]
    shown = ("accuracy", "top5", "cer", "wer", "perplexity", "bits_per_char", "loss")
    figures = ", ".join(f"{k} {summary[k]:.4f}" for k in shown if k in summary)
    print(
        f"done: {summary['split']} {figures} after {summary['steps']} steps / {summary['epochs']} epochs in "
        f"{summary['train_seconds']:.1f}s | {speed['device']} {speed['label']}"
    )
    print(f"run directory: {summary['run']}")


def cmd_evaluate(args) -> int:
    from grove.engine.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, args.split, args.checkpoint, args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    skip = ("per_class", "confusion_matrix", "classes", "split", "checkpoint", "count", "skipped_files")
    figures = "  ".join(f"{k} {v:.4f}" for k, v in result.items() if k not in skip and isinstance(v, float))
    print(f"{result['split']}: {figures}  ({result['count']} samples)")
    if "per_class" not in result:
        return 0
    pc = result["per_class"]
    width = max(len(c) for c in result["classes"])
    print(f"{'class':<{width}}  precision  recall  f1      support")
    for i, name in enumerate(result["classes"]):
        print(f"{name:<{width}}  {pc['precision'][i]:9.4f}  {pc['recall'][i]:6.4f}  {pc['f1'][i]:.4f}  {pc['support'][i]:7d}")
    if len(result["classes"]) <= 20:
        print("confusion matrix (rows: true, columns: predicted):")
        for row in result["confusion_matrix"]:
            print(" ".join(f"{n:5d}" for n in row))
    return 0


def cmd_predict(args) -> int:
    predictor = load(args)
    results = predictor.predict_each(args.inputs, top=args.top_k, beam_width=args.beam_width)
    failed = sum(isinstance(r, GroveError) for r in results)
    if args.json:
        def record(item, result):
            if isinstance(result, GroveError):
                return {"input": item, "error": str(result)}
            if predictor.task == "ctc":
                return {"input": item, "transcript": result}
            return {"input": item, "top": [{"label": label, "probability": p} for label, p in result]}

        print(json.dumps([record(i, r) for i, r in zip(args.inputs, results)], indent=2))
    else:
        for item, result in zip(args.inputs, results):
            if isinstance(result, GroveError):
                print(f"error: {result}", file=sys.stderr)
            elif predictor.task == "ctc":
                print(f"{item}: {result}")
            else:
                print(f"{item}: " + ", ".join(f"{label} {prob:.3f}" for label, prob in result))
    return failures(failed, len(results), "read")


def failures(failed: int, total: int, done: str) -> int:
    """The exit code of a command over several inputs, with a closing line when some failed."""
    if failed and total > 1:
        others = "the others are above" if failed < total else "none could"
        print(f"{failed} of {total} inputs could not be {done}; {others}", file=sys.stderr)
    return 2 if failed else 0


def cmd_generate(args) -> int:
    predictor = load(args)
    pieces = predictor.generate(args.prompt, args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    # The first piece tokenizes the prompt and samples once, so a bad prompt or sampling option
    # is reported before anything is printed.
    print(args.prompt + next(pieces, ""), end="", flush=True)
    for piece in pieces:
        print(piece, end="", flush=True)
    print()
    return 0


def cmd_export(args) -> int:
    from grove.export import export_run

    folder, manifest = export_run(args.run_dir, out=args.out, format=args.format, int8=args.int8,
                                  checkpoint=args.checkpoint, threads=args.threads)
    parity = manifest.parity
    stepwise = " and token by token through its cache" if manifest.task == "lm" else ""
    print(f"parity: max |diff| {parity.max_abs_diff:.1e}, top-1 agreement {100 * parity.top1_agreement:.1f}% on "
          f"{parity.inputs} {parity.split} inputs (batch sizes {', '.join(map(str, parity.batch_sizes))}){stepwise}")
    if manifest.int8 is not None:
        q = manifest.int8
        figures = ", ".join(f"{k} {v:.4f} -> {q.after[k]:.4f}" for k, v in q.before.items() if k in q.after)
        against = "" if q.parity is None else (f"; max |diff| {q.parity.max_abs_diff:.1e}, top-1 agreement "
                                               f"{100 * q.parity.top1_agreement:.1f}% against the model")
        print(f"int8 ({q.mode}): {figures} on {q.split}{against} (`grove predict EXPORT_DIR --int8` runs it)")
        for warning in q.warnings:
            print(f"warning: {warning}")
    print(f"export folder: {folder}")
    return 0


def cmd_explain(args) -> int:
    import re
    from pathlib import Path

    from grove.predictor import Predictor
    from grove.runtime.manifest import is_export_dir

    if is_export_dir(args.run_dir):
        raise GroveError("explanations take gradients through the PyTorch model: pass the run directory, not an export folder")
    out = Path(args.out) if args.out else Path(args.run_dir) / "explanations"
    if out.exists() and not out.is_dir():
        raise GroveError(f"--out {out} is a file: name a folder for the pictures and attributions")
    predictor = Predictor.load(args.run_dir, args.checkpoint, args.device)
    results = predictor.explain_each(args.inputs, method=args.method, target=args.target)
    records, failed = [], 0
    for i, (given, e) in enumerate(zip(args.inputs, results)):
        if isinstance(e, GroveError):
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            records.append({"input": given, "error": str(e)})
            continue
        # Files are named after the input file (texts: by position) and say what was explained.
        name = f"text-{i}" if predictor.modality == "text" else Path(given).stem
        stem = re.sub(r"[^\w.-]+", "_", f"{name}.{e.method}.{e.target}")[:120]
        try:
            files = e.save(out, stem)
        except OSError as err:
            raise GroveError(f"cannot write the explanation to {out}: {err.strerror or err}; choose another --out") from None
        records.append({**e.to_dict(), "files": [str(f) for f in files]})
        if args.json:
            continue
        d = e.deletion
        faithful = "" if d["auc"] is None else f"; deletion area {d['auc']:.3f} (random order {d['random_auc']:.3f})"
        shown = e.input if len(e.input) <= 60 else e.input[:57] + "..."
        if e.task == "ctc" and not e.characters:
            print(f"{shown}: the model transcribed nothing, so there is nothing to explain")
            continue
        print(f"{shown}: {e.target!r} ({e.probability:.3f}) by {e.method}{faithful}")
        if e.tokens is not None:
            print("  " + e.terminal(color=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
        print(f"  {', '.join(map(str, files))}")
    if args.json:
        print(json.dumps(records, indent=2))
    return failures(failed, len(results), "explained")


def cmd_serve(args) -> int:
    try:
        from grove.serve import serve
        from grove.serve.app import Limits
    except ImportError as err:
        raise GroveError(f"grove serve needs the serve extra ({err.name} is missing): pip install 'grove[serve]'") from None

    if not args.timeout > 0 or not args.max_upload_mb > 0:
        raise GroveError("--timeout and --max-upload-mb must be above 0")
    limits = Limits(max_body=int(args.max_upload_mb * (1 << 20)), timeout=args.timeout)
    serve(args.paths, host=args.host, port=args.port, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
          queue=args.queue, api_key_env=args.api_key_env, limits=limits, threads=args.threads, device=args.device,
          int8=args.int8)
    return 0


def cmd_report(args) -> int:
    from grove.report import write_report

    print(f"report: {write_report(args.run_dir, out=args.out, device=args.device)}")
    return 0


def cmd_audit(args) -> int:
    from pathlib import Path

    from grove.privacy.audit import AUDIT, audit_run

    result = audit_run(args.run_dir, args.checkpoint, members=args.members, seed=args.seed, device=args.device,
                       reference=not args.no_reference, reference_steps=args.reference_steps)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    members, non_members = result["members"], result["non_members"]
    print(f"{members} members (train) against {non_members} non-members ({result['split']}), "
          f"{result['checkpoint']} checkpoint")
    print(f"{'attack':<10}  {'AUC':>5}  TPR@1%FPR  members  non-members  mean loss members / non-members")
    for name, a in result["attacks"].items():
        ref = a.get("reference")
        under = (f" (the reference model's, trained on {ref['examples']} other {result['split']} examples for "
                 f"{ref['steps']} steps)") if ref else ""
        print(f"{name:<10}  {a['auc']:.3f}  {a['tpr_at_1pct_fpr']:9.3f}  {members:7d}  {non_members:11d}  "
              f"{a['members_loss']:.4g} / {a['non_members_loss']:.4g}{under}")
        if ref and not ref["learned"]:
            print(f"warning: the reference model did not learn (its held-out loss {a['non_members_loss']:.3g} is worse "
                  "than guessing), so the calibrated attack's AUC means nothing here; the loss attack's stands")
    if "accuracy" in result:
        acc = result["accuracy"]
        print(f"accuracy: members {acc['members']:.4f}, non-members {acc['non_members']:.4f} (gap {acc['gap']:+.4f})")
    best = max(a["auc"] for a in result["attacks"].values())
    print(f"An AUC of 0.5 means an attack tells members from non-members no better than chance (the highest here is "
          f"{best:.3f}); a low AUC does not prove privacy: only differential privacy's epsilon bounds every attack.")
    print(f"audit: {Path(result['run']) / AUDIT}")
    return 0


def cmd_recipes(args) -> int:
    from grove.config import builtin_recipes, recipe_description

    recipes = builtin_recipes()
    width = max(len(n) for n in recipes)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {recipe_description(path)}")
    return 0


def cmd_models(args) -> int:
    import torch

    from grove.models.utils import count_params
    from grove.registry import MODELS

    width = max(map(len, MODELS.names()))
    for name in MODELS.names():
        entry = MODELS.get(name)
        tags = "/".join(str(v) for v in entry.tags.values())
        size = f"{'-':>8}"  # a model whose default needs a missing checkpoint
        for device in ("meta", "cpu"):  # meta: shapes only, so VGG-16's 138M parameters allocate nothing
            try:
                with torch.device(device):
                    size = f"{count_params(entry.fn()) / 1e6:7.2f}M"
                break
            except (GroveError, ValueError, OSError, RuntimeError, NotImplementedError):
                continue
        print(f"{name:<{width}}  {tags:<18} {size}  {entry.description}")
    return 0


def cmd_datasets(args) -> int:
    from grove.registry import DATASETS

    width = max(map(len, DATASETS.names()))
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        print(f"{name:<{width}}  {entry.tags.get('modality', ''):<8} {entry.description}")
    return 0
