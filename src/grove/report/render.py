"""The report as one self-contained HTML page: images inline as data: URIs, no scripts, no
network; a narrow column that reads on a phone, with wide tables scrolling inside their own box.

Every figure from the evaluation sits in a cell with `data-metric` (its name) and `data-value`
(its exact value), so a reader, or a test, can check the page against `grove evaluate`.
"""

from __future__ import annotations

import base64
import difflib
import json
from html import escape

from grove import __version__
from grove.data.base import SPLITS
from grove.report.collect import GENERATE, ReportData
from grove.rundir import CONFIG
from grove.tasks.ctc import edit_distance

SHOWN_CLASSES = 50  # class names listed in the data summary
SHOWN_SKIPPED = 20  # skipped files listed
CARD_CLASSES = 20  # classes in the model card's table; more show the weakest and strongest half each

STYLE = """
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; background: #fff;
       max-width: 60rem; margin: 0 auto; padding: 0 1rem 3rem; overflow-wrap: anywhere; }
h1 { font-size: 1.5rem; margin: 1.5rem 0 0.25rem; }
h2 { font-size: 1.25rem; margin-top: 2.5rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.25rem; }
h3 { font-size: 1.05rem; }
nav { font-size: 0.9rem; } nav a { margin-right: 0.75rem; white-space: nowrap; }
.muted { color: #57606a; font-size: 0.9rem; }
pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.85rem; }
pre { background: #f6f8fa; padding: 0.75rem; overflow-x: auto; max-height: 32rem; }
pre.wrap { white-space: pre-wrap; max-height: none; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top;
         overflow-wrap: normal; }
th, td.num { white-space: nowrap; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
.plots { display: flex; flex-wrap: wrap; gap: 0.5rem; } .plots img { width: 28rem; }
.mistake { border: 1px solid #d0d7de; padding: 0.5rem; margin: 0.75rem 0; }
.mistake .input { image-rendering: pixelated; width: 6rem; } .mistake figure { margin: 0; }
del { background: #ffd7d5; } ins { background: #ccffd8; text-decoration: underline; }
"""


def render(d: ReportData) -> str:
    task = d.meta.task
    sections = [
        ("recipe", "Recipe", _recipe(d)),
        ("data", "Data", _data(d)),
        ("curves", "Training curves", _curves(d)),
        ("metrics", f"Metrics on the {d.figures['split']} split", _metrics(d)),
    ]
    if task == "classification":
        sections += [("calibration", "Calibration", _calibration(d)),
                     ("mistakes", "Most confident mistakes", _mistakes(d))]
    elif task == "ctc":
        sections.append(("transcripts", "Transcripts", _transcripts(d)))
    else:
        sections.append(("samples", "Generated samples", _samples(d)))
    sections += [("compute", "Compute", _compute(d)), ("privacy", "Privacy", _privacy(d)),
                 ("model-card", "Model card", _card(d))]
    title = f"{d.meta.recipe}: {d.meta.model.name} ({task})"
    nav = "".join(f'<a href="#{key}">{escape(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{escape(name)}</h2>{html}</section>' for key, name, html in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>grove report: {escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p class=\"muted\">run {_code(d.run.path)}, "
        f"checkpoint {_code(d.figures['checkpoint'])}; report by grove {escape(__version__)}</p>"
        f"<nav>{nav}</nav></header>{body}</body></html>\n"
    )


# -- sections ----------------------------------------------------------------------------------
def _recipe(d: ReportData) -> str:
    config = d.run.path / CONFIG
    return (
        f"<p>To train it again (a new run directory under the same <code>run.dir</code>):</p>"
        f"<pre>grove train {escape(str(config))}</pre>"
        f"<p>The run was started from the recipe {_code(d.meta.recipe)}; its <code>config.yaml</code> is that "
        "recipe with every override applied and every default filled in, as below.</p>"
        f"<pre>{escape(d.config_text)}</pre>"
    )


def _data(d: ReportData) -> str:
    rows = [[_td("data set"), _td(d.data_name)]]
    rows += [[_td(key), _td(_plain(value))] for key, value in d.data_options.items()]
    splits = [[_td(split), _td(d.splits.get(split) or f"not available: {d.missing_splits[split]}")] for split in SPLITS]
    html = _table(["setting", "value"], rows) + "<h3>Splits</h3>" + _table(["split", "size"], splits)
    html += f"<h3>{_class_heading(d)}</h3>{_class_list(d)}"
    html += "<h3>Skipped files</h3>"
    if not d.skipped:
        return html + "<p>None: every file was readable.</p>"
    more = f"<p class=\"muted\">and {len(d.skipped) - SHOWN_SKIPPED} more in skipped_files.txt</p>" \
        if len(d.skipped) > SHOWN_SKIPPED else ""
    listed = "\n".join(d.skipped[:SHOWN_SKIPPED])
    return html + (f"<p>{len(d.skipped)} unreadable file(s) were skipped (skipped_files.txt):</p>"
                   f"<pre>{escape(listed)}</pre>{more}")


def _class_heading(d: ReportData) -> str:
    return {"ctc": "Alphabet", "lm": "Vocabulary"}.get(d.meta.task, "Classes")


def _class_list(d: ReportData) -> str:
    if d.meta.task == "lm":
        data = d.meta.data
        return f"<p>{data.get('vocab_size', 0):,} tokens ({escape(str(data.get('tokenizer', '')))} tokenizer).</p>"
    classes = d.meta.classes
    shown = ", ".join(_code(c) for c in classes[:SHOWN_CLASSES])
    more = f" and {len(classes) - SHOWN_CLASSES:,} more" if len(classes) > SHOWN_CLASSES else ""
    return f"<p>{len(classes):,}: {shown}{more}</p>"


def _curves(d: ReportData) -> str:
    if not d.curves:
        return "<p>metrics.jsonl holds no records to plot.</p>"
    return '<div class="plots">' + "".join(_img(png, "training curve") for png in d.curves) + "</div>"


def _metrics(d: ReportData) -> str:
    f = d.figures
    headline = [k for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    rows = [[_td(k), _figure(k, f[k])] for k in headline]
    html = (f"<p>The {escape(f['split'])} split, checkpoint {_code(f['checkpoint'])}: the figures "
            f"<code>grove evaluate {escape(str(d.run.path))}</code> prints.</p>" + _table(["metric", "value"], rows))
    if "per_class" in f:
        pc = f["per_class"]
        rows = [[_td(name)] + [_figure(f"{m}[{i}]", pc[m][i]) for m in ("precision", "recall", "f1", "support")]
                for i, name in enumerate(f["classes"])]
        html += "<h3>Per class</h3>" + _table(["class", "precision", "recall", "f1", "support"], rows)
    if d.confusion:
        html += "<h3>Confusion matrix</h3><p class=\"muted\">rows: true class, columns: predicted</p>"
        html += _img(d.confusion, "confusion matrix")
    return html


def _calibration(d: ReportData) -> str:
    c = d.calibration
    rows = [[f"<td class=\"num\">({b['lower']:.3f}, {b['upper']:.3f}]</td>", _num(b["count"]),
             _num(b["accuracy"]), _num(b["confidence"])] for b in c["bins"] if b["count"]]
    return (
        f"<p>Expected calibration error: <strong data-metric=\"ece\" data-value=\"{c['ece']!r}\">{c['ece']:.4f}"
        f"</strong> over {c['count']:,} samples, in {len(c['bins'])} equal-width bins of top-class probability "
        "(the mean gap between each bin's accuracy and confidence, weighted by its samples; 0 is perfectly "
        "calibrated).</p>"
        + _img(d.reliability, "reliability diagram")
        + "<h3>Bins with samples</h3>" + _table(["confidence", "samples", "accuracy", "mean confidence"], rows)
    )


def _mistakes(d: ReportData) -> str:
    if not d.mistakes:
        return f"<p>No mistakes on the {escape(d.figures['split'])} split.</p>"
    note = f"<p><em>{escape(d.explain_note)}</em></p>" if d.explain_note else (
        "<p>Each explanation is of the class the model wrongly chose: what that prediction rested on, and its "
        "deletion score (the area under the probability as the most important features are removed first; well "
        "below the random order's area means the explanation found the evidence).</p>")
    items = []
    for m in d.mistakes:
        if m.explanation is not None:  # it draws the input too: the picture under its heat, or the tokens
            shown = m.explanation.html()
        else:
            shown = _img(m.image, "input", "input") if m.image else f"<p>{escape(m.text)}</p>"
        items.append(
            f'<div class="mistake"><p><strong>{escape(m.predicted)}</strong> at {m.confidence:.3f}, truly '
            f"<strong>{escape(m.true)}</strong> <span class=\"muted\">({escape(m.name)})</span></p>{shown}</div>"
        )
    return note + "".join(items)


def _transcripts(d: ReportData) -> str:
    if not d.transcripts:
        return "<p>No utterances were evaluated.</p>"
    rows = []
    for ref, hyp in d.transcripts:
        ref_html, hyp_html = marked_diff(ref, hyp)
        cer = edit_distance(ref, hyp) / max(len(ref), 1)
        wer = edit_distance(ref.split(), hyp.split()) / max(len(ref.split()), 1)
        rows.append([_num(cer), _num(wer), f"<td>reference: {ref_html}<br>hypothesis: {hyp_html}</td>"])
    return (
        f"<p>The first {len(rows)} utterances of the {escape(d.figures['split'])} split, decoded greedily "
        "(as the metrics are): <del>struck</del> in the reference is missing or wrong in the hypothesis, "
        "<ins>underlined</ins> in the hypothesis is wrong or added; words that differ in a few characters "
        "have only those marked.</p>"
        + _table(["cer", "wer", "transcripts"], rows, "transcript")
    )


def _samples(d: ReportData) -> str:
    f = d.figures
    extra = f", {f['bits_per_char']:.4f} bits per character" if "bits_per_char" in f else ""
    html = (f"<p>Perplexity <strong>{f['perplexity']:.4f}</strong>{extra} on the {escape(f['split'])} split "
            f"({f['count']:,} tokens).</p>"
            f"<p>Prompts (in bold) are the starts of {escape(f['split'])} rows; each continuation is "
            f"<code>grove generate RUN --prompt PROMPT --max-new-tokens {GENERATE['max_new_tokens']} "
            f"--temperature {GENERATE['temperature']} --seed SEED</code>.</p>")
    for s in d.samples:
        text = f"<em>{escape(s.error)}</em>" if s.error else escape(s.continuation)
        html += f'<p class="muted">seed {s.seed}</p><pre class="wrap"><strong>{escape(s.prompt)}</strong>{text}</pre>'
    return html


def _compute(d: ReportData) -> str:
    c = d.compute
    rows = [
        ("parameters", f"{c['params']:,}"),
        ("forward FLOPs per sample", f"{_si(c['flops'])}FLOPs (an input of shape {c['example_input']})"),
        ("training time", f"{c['train_seconds']:.1f} s for {c['steps']:,} steps in {c['epochs']} epoch(s)"),
        ("throughput", "not logged" if c["samples_per_s"] is None
         else f"{c['samples_per_s']:,.1f} samples/s (training, median over log intervals)"),
        ("devices", f"{c['device']} x{c['processes']}"),
        ("speed settings", c["speed"]),
    ]
    if "mfu" in c:
        rows.append(("MFU", f"{100 * c['mfu']:.2f}% of the measured peak matmul FLOP/s"))
    return _table(None, [[_td(k), _td(v)] for k, v in rows])


def _privacy(d: ReportData) -> str:
    p = d.privacy
    if not p:
        return "<p>No privacy accounting is recorded for this run: it was not trained with differential privacy.</p>"
    rows = [[_td(key), _figure(key, value, ".4g") if isinstance(value, (int, float)) else _td(str(value))]
            for key, value in p.items() if value is not None]
    return ("<p>Differential privacy of the training (DP-SGD): with probability at least 1 - delta, no "
            "single training example changes the chance of any outcome of training by more than a factor "
            "e<sup>epsilon</sup>.</p>" + _table(None, rows))


def _card(d: ReportData) -> str:
    f, meta = d.figures, d.meta
    split, data = escape(f["split"]), _code(d.data_name)
    n = f"{f['count']:,} {'tokens' if meta.task == 'lm' else 'utterances' if meta.task == 'ctc' else 'samples'}"
    if meta.task == "classification":
        names = ", ".join(escape(c) for c in meta.classes[:10]) + (", ..." if len(meta.classes) > 10 else "")
        intended = f"Classifies {escape(meta.modality)} inputs into one of {len(meta.classes):,} classes ({names})."
    elif meta.task == "ctc":
        intended = "Transcribes speech into text, character by character."
    else:
        intended = "Continues a text prompt in the style of its training corpus."
    intended += (f" Trained by grove from the recipe {_code(meta.recipe)} for {d.summary['steps']:,} steps; meant for "
                 "research, teaching and prototyping on data like its training data. It has not been validated for "
                 "decisions that affect people or for any safety-critical use.")
    limits = [f"Evaluated only on the {split} split of {data} ({n}); expect other figures on data from elsewhere."]
    if meta.task == "classification":
        limits.append("It always answers with one of its classes, even for an input unlike any of them.")
        limits.append(f"Its probabilities are estimates: the expected calibration error on the {split} split is "
                      f"{d.calibration['ece']:.3f}.")
        pc = f["per_class"]
        empty = sum(1 for s in pc["support"] if s == 0)
        if empty:
            limits.append(f"{empty} class(es) have no {split} samples, so their figures say nothing.")
    elif meta.task == "ctc":
        chars = ", ".join("space" if c == " " else escape(c) for c in meta.classes[1:])  # [0] is the blank
        limits.append(f"It can only write the {len(meta.classes) - 1} characters of its alphabet ({chars}).")
    else:
        limits.append("It reproduces patterns of its training text, including its errors and biases, and may repeat "
                      "passages of it; what it writes is not checked for truth or safety.")
    if d.skipped:
        limits.append(f"{len(d.skipped)} unreadable file(s) were skipped, so it saw less data than the folder holds.")
    if not d.privacy:
        limits.append("Trained without differential privacy: it may memorise individual training examples.")
    sizes = ", ".join(f"{escape(s)} {escape(size)}" for s, size in d.splits.items())
    html = (f"<h3>Intended use</h3><p>{intended}</p><h3>Limitations</h3><ul>"
            + "".join(f"<li>{item}</li>" for item in limits) + "</ul>"
            f"<h3>Training data</h3><p>The data set {data}; splits: {sizes or 'not available'}.</p>")
    if "per_class" not in f:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in f.items() if isinstance(v, float))
        return html + f"<h3>Metrics</h3><p>{escape(shown)} on the {split} split.</p>"
    html += "<h3>Metrics by class</h3>"
    pc = f["per_class"]
    order = sorted(range(len(f["classes"])), key=lambda i: pc["f1"][i])
    note = ""
    if len(order) > CARD_CLASSES:
        half = CARD_CLASSES // 2
        order = order[:half] + order[-half:]
        note = f"<p class=\"muted\">The {half} weakest and {half} strongest classes by F1; all are under Metrics.</p>"
    rows = [[_td(f["classes"][i]), _num(pc["f1"][i]), _num(pc["recall"][i]), _num(pc["support"][i])] for i in order]
    return html + note + _table(["class", "f1", "recall", "support"], rows)


# -- transcripts ---------------------------------------------------------------------------------
def marked_diff(ref: str, hyp: str) -> tuple[str, str]:
    """(reference, hypothesis) as HTML: what the hypothesis lost or got wrong in <del> in the
    reference, what it got wrong or added in <ins>; a replaced word is marked character by character."""
    r, h = ref.split(), hyp.split()
    ref_out, hyp_out = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=r, b=h, autojunk=False).get_opcodes():
        a, b = " ".join(r[i1:i2]), " ".join(h[j1:j2])
        if op == "equal":
            ref_out.append(escape(a))
            hyp_out.append(escape(b))
        elif op == "replace":
            x, y = _char_diff(a, b)
            ref_out.append(x)
            hyp_out.append(y)
        else:
            if a:
                ref_out.append(f"<del>{escape(a)}</del>")
            if b:
                hyp_out.append(f"<ins>{escape(b)}</ins>")
    return " ".join(ref_out), " ".join(hyp_out) or f"<em>({'spaces only' if hyp else 'empty'})</em>"


def _char_diff(a: str, b: str) -> tuple[str, str]:
    x, y = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            x.append(escape(a[i1:i2]))
            y.append(escape(b[j1:j2]))
            continue
        if i2 > i1:
            x.append(f"<del>{escape(a[i1:i2])}</del>")
        if j2 > j1:
            y.append(f"<ins>{escape(b[j1:j2])}</ins>")
    return "".join(x), "".join(y)


# -- small pieces --------------------------------------------------------------------------------
def _table(head: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    """A table in its own horizontally scrolling box; head None: rows only."""
    header = "" if head is None else "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>"
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f'<div class="scroll"><table{attr}>{header}<tbody>{body}</tbody></table></div>'


def _td(text) -> str:
    return f"<td>{escape(str(text))}</td>"


def _num(value) -> str:
    if value is None:
        return "<td></td>"
    return f'<td class="num">{value:,}</td>' if isinstance(value, int) else f'<td class="num">{value:.4f}</td>'


def _figure(name: str, value, fmt: str = ".4f") -> str:
    """A figure's cell, carrying its name and exact value."""
    shown = f"{value:,}" if isinstance(value, int) else format(value, fmt)
    return f'<td class="num" data-metric="{escape(name)}" data-value="{value!r}">{shown}</td>'


def _img(png: bytes, alt: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f'<img{attr} alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _code(text) -> str:
    return f"<code>{escape(str(text))}</code>"


def _plain(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} "
