"""Explanations drawn: a PNG for images and audio, coloured tokens in HTML or on a terminal."""

from __future__ import annotations

import base64
import html as html_lib
import io

import numpy as np

HEAT_ALPHA = 0.8  # at the strongest evidence; none where there is none


def png(e) -> bytes:
    if e.tokens is not None:
        raise ValueError("text explanations are drawn as tokens: use html() or terminal()")
    from matplotlib.figure import Figure  # not pyplot: its global list of figures is not thread-safe

    heat = _unit(e.heat)
    if e.modality == "image":
        fig = Figure(figsize=(9.6, 3.2))
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.1]})
        shown = e.display if e.display.shape[-1] == 3 else e.display[..., 0]
        gray = None if shown.ndim == 3 else "gray"
        axes[0].imshow(shown, cmap=gray, vmin=0, vmax=1)
        axes[0].set_title("input, as the model sees it")
        axes[1].imshow(shown, cmap=gray, vmin=0, vmax=1)
        axes[1].imshow(heat, cmap="jet", alpha=HEAT_ALPHA * heat, vmin=0, vmax=1)
        axes[1].set_title(f"{e.method}: {e.target}")
        for ax in axes[:2]:
            ax.axis("off")
        _bars(axes[2], e.top)
    else:
        bars = bool(e.top)
        fig = Figure(figsize=(9.6 if bars else 7.2, 3.2))
        axes = fig.subplots(1, 2 if bars else 1, squeeze=False, gridspec_kw={"width_ratios": [2.2, 1] if bars else [1]})
        ax = axes[0][0]
        ax.imshow(e.display, origin="lower", aspect="auto", cmap="gray")
        ax.imshow(heat, origin="lower", aspect="auto", cmap="jet", alpha=HEAT_ALPHA * heat, vmin=0, vmax=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("mel band")
        ax.set_title(f"{e.method}: {e.target!r}" if e.task == "ctc" else f"{e.method}: {e.target}")
        for ch in e.characters:  # a transcript's characters where the path emits them
            ax.annotate(ch["char"], (ch["frame"], e.display.shape[0] - 1), color="white", ha="center", va="top",
                        fontsize=9, fontweight="bold")
        if bars:
            _bars(axes[0][1], e.top)
    fig.suptitle(_deletion_line(e), fontsize=8, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _bars(ax, top) -> None:
    labels = [label for label, _ in top][::-1]
    ax.barh(range(len(top)), [p for _, p in top][::-1], color="#3b7dd8")
    ax.set_yticks(range(len(top)), labels)
    for i, (_, p) in enumerate(top[::-1]):
        ax.text(min(p, 0.8) + 0.02, i, f"{p:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_title("top-k")


def html(e) -> str:
    """A fragment for any page: coloured tokens for text, the picture inline otherwise."""
    caption = html_lib.escape(f"{e.method}: {e.target} ({e.probability:.3f}); {_deletion_line(e)}")
    if e.tokens is None:
        data = base64.b64encode(png(e)).decode()
        return (f'<figure class="grove-explanation"><img alt="{caption}" style="max-width:100%" '
                f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>')
    spans = []
    scale = float(np.abs(e.heat).max()) or 1.0
    for token, a in zip(e.tokens, e.heat):
        red, green, blue = _color(float(a) / scale)
        spans.append(f'<span title="{float(a):+.4f}" style="background:rgb({red},{green},{blue});'
                     f'padding:0 2px;border-radius:3px">{html_lib.escape(token)}</span>')
    return f'<div class="grove-explanation"><p>{" ".join(spans)}</p><p><small>{caption}</small></p></div>'


def terminal(e, color: bool = True) -> str:
    if e.tokens is None:
        raise ValueError("only text explanations are printed as tokens; images and audio are saved as PNG")
    scale = float(np.abs(e.heat).max()) or 1.0
    if not color:
        return " ".join(f"{t}[{float(a):+.3g}]" for t, a in zip(e.tokens, e.heat))
    out = []
    for token, a in zip(e.tokens, e.heat):
        red, green, blue = _color(float(a) / scale)
        out.append(f"\x1b[48;2;{red};{green};{blue}m\x1b[38;2;0;0;0m{token}\x1b[0m")
    return " ".join(out)


def _color(a: float) -> tuple[int, int, int]:
    """White at 0, green towards +1 (evidence for the label), red towards -1 (against it)."""
    a = max(-1.0, min(1.0, a))
    fade = round(255 * (1 - abs(a) * 0.75))
    return (fade, 255, fade) if a >= 0 else (255, fade, fade)


def _unit(heat: np.ndarray) -> np.ndarray:
    """The positive evidence scaled to 0..1, for drawing."""
    positive = np.clip(heat, 0, None)
    top = positive.max()
    return positive / top if top > 0 else positive


def _deletion_line(e) -> str:
    d = e.deletion
    if d["auc"] is None:
        return "deletion: nothing to remove"
    return f"deletion area {d['auc']:.3f} (random order {d['random_auc']:.3f}; lower is more faithful)"
