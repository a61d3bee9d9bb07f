"""Explanations: why a run's model decided what it did, and how faithful that answer is.

    grove.load(run).explain(inputs, method="auto", target=None) -> [Explanation, ...]
    grove explain RUN INPUT... [--method ...] [--target LABEL] [--out DIR] [--json]

Per modality (Captum underneath, grove/explain/attribution.py):
- images: Grad-CAM on the CNN's feature layer, attention rollout for vision transformers,
  Integrated Gradients, saliency or occlusion for any model; over the normalised pixels;
- audio: the same over the normalised log-mel features (mel band x frame); a CTC model is
  explained per emitted character (greedy path: each character's probability at its frame);
- text: per token, by layer Integrated Gradients (or gradient x embedding, or occlusion) at the
  token embedding; a language model's explained output is its next token.
Every explanation carries its deletion score (grove/explain/deletion.py) so its faithfulness is
measured, not assumed. Inputs of one batch are explained together.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from grove.errors import GroveError, did_you_mean
from grove.explain import attribution
from grove.explain.deletion import deletion

METHODS = ("auto", "ig", "saliency", "gradcam", "occlusion", "attention")
# What auto means, for every model: on held-out digits, spoken words and the digits ViT Integrated
# Gradients removes the evidence fastest of the methods (benchmarks/explain.py; Grad-CAM's coarse
# maps of small inputs and attention rollout barely beat a random order there), and its
# attributions add up to the change in probability they explain.
AUTO_METHOD = "ig"


@dataclass
class Explanation:
    """One input's explanation. `attribution` is Captum's, on the model input: (C, H, W) for an
    image, (F, T) for audio, (T,) per token, (characters, F, T) for a transcript; `heat` is what is
    drawn: (H, W), (F, T) or (T,), positive where the input raised the explained probability."""

    input: str  # what was explained: a file name, the text, or "#i"
    task: str
    modality: str
    method: str
    target: str  # the explained label, next token, or transcript
    probability: float  # the model's probability of it (transcripts: mean over the characters)
    top: list[tuple[str, float]]  # the most probable labels or next tokens
    attribution: np.ndarray
    heat: np.ndarray
    deletion: dict  # auc, random_auc, fractions, curve, random_curve (grove.explain.deletion)
    display: np.ndarray  # the input as drawn: (H, W, C) in 0..1, or (F, T) features
    tokens: list[str] | None = None
    characters: list[dict] = field(default_factory=list)  # transcripts: {"char", "frame"} per character

    def png(self) -> bytes:
        """The picture: the input, the heat over it, the prediction beside (images and audio)."""
        from grove.explain.render import png

        return png(self)

    def html(self) -> str:
        """A self-contained HTML fragment: the picture as a data: URI, or coloured tokens."""
        from grove.explain.render import html

        return html(self)

    def terminal(self, color: bool = True) -> str:
        """Tokens coloured by attribution (ANSI), or their scores in brackets without colour."""
        from grove.explain.render import terminal

        return terminal(self, color)

    def save(self, folder, stem: str) -> list:
        """STEM.png (or STEM.html for text) and STEM.npy (the attribution) in folder, written atomically."""
        import io
        from pathlib import Path

        from grove.files import atomic_write

        folder = Path(folder)
        picture = folder / f"{stem}.{'html' if self.tokens is not None else 'png'}"
        atomic_write(picture, self.html() if self.tokens is not None else self.png())
        buffer = io.BytesIO()
        np.save(buffer, self.attribution)
        atomic_write(folder / f"{stem}.npy", buffer.getvalue())
        return [picture, folder / f"{stem}.npy"]

    def to_dict(self) -> dict:
        d = {"input": self.input, "method": self.method, "target": self.target, "probability": self.probability,
             "top": [{"label": label, "probability": p} for label, p in self.top],
             "deletion": {"auc": self.deletion["auc"], "random_auc": self.deletion["random_auc"]}}
        if self.tokens is not None:
            d["tokens"] = [{"token": t, "attribution": float(a)} for t, a in zip(self.tokens, self.heat)]
        if self.task == "ctc":
            d["characters"] = self.characters
        return d


def methods_for(model, modality: str) -> list[str]:
    """The methods that explain this model, "auto" first; explain_items refuses the others
    (attribution.check_method says why)."""
    fits = []
    for method in METHODS:
        try:
            attribution.check_method(model, modality, method)
            fits.append(method)
        except GroveError:
            pass
    return fits


def explain_items(predictor, items: list, names: list[str], method: str = "auto", targets: list | None = None) -> list[Explanation]:
    """Explanations of inputs already read (`predictor.read`), in one batch where the task allows.
    `targets`: per input a class index (a token id for a language model), or None for the
    predicted one."""
    if method not in METHODS:
        raise GroveError(f"unknown explanation method '{method}'{did_you_mean(method, METHODS)}; "
                         f"choose one of {', '.join(METHODS)}")
    try:
        import captum  # noqa: F401
    except ImportError:
        raise GroveError("explanations need Captum, in the explain extra: pip install 'grove[explain]'") from None
    p = predictor
    if method == "auto":
        method = AUTO_METHOD
    attribution.check_method(p.model, p.modality, method)
    targets = list(targets) if targets is not None else [None] * len(items)
    rnn = any(isinstance(m, torch.nn.RNNBase) for m in p.model.modules())
    # cuDNN runs an RNN's backward only in training mode; the explained model stays in eval mode.
    flags = torch.backends.cudnn.flags(enabled=False) if rnn else contextlib.nullcontext()
    with torch.enable_grad(), flags:
        if p.task == "ctc":
            return [_transcript(p, item, name, method) for item, name in zip(items, names)]
        if p.task == "lm":
            return [_next_token(p, item, name, method, target) for item, name, target in zip(items, names, targets)]
        if p.modality == "text":
            return _texts(p, items, names, method, targets)
        return _dense(p, items, names, method, targets)


def _probabilities(model):
    return lambda x: model(x).float().softmax(-1)


def _chosen(probs: torch.Tensor, targets: list) -> torch.Tensor:
    picked = probs.argmax(-1)
    return torch.tensor([int(p) if t is None else t for p, t in zip(picked.tolist(), targets)], device=probs.device)


def _top(probs: torch.Tensor, labels, k: int = 5) -> list[tuple[str, float]]:
    values, indices = probs.topk(min(k, probs.numel()))
    return [(labels(int(i)), float(v)) for v, i in zip(values, indices)]


def _dense(p, items, names, method, targets) -> list[Explanation]:
    model, image = p.model, p.modality == "image"
    x = p.transform(torch.cat(items).to(p.device), False)  # (B, C, H, W) or (B, F, T)
    forward = _probabilities(model)
    with torch.no_grad():
        probs = forward(x)
    target = _chosen(probs, targets)
    attr = attribution.dense(model, forward, x, target, method).detach()
    heat = attr.sum(1) if image else attr  # (B, H, W) over the channels, or (B, F, T)
    out = []
    for i, name in enumerate(names):
        xi, t = x[i : i + 1], int(target[i])
        spread = (lambda m: m[:, None]) if image else (lambda m: m)
        curves = deletion(lambda v: forward(v)[:, t], lambda m: torch.where(spread(m), 0.0, xi),
                          heat[i], torch.ones_like(heat[i], dtype=torch.bool))
        out.append(Explanation(name, p.task, p.modality, method, p.classes[t], float(probs[i, t]),
                               _top(probs[i], p.classes.__getitem__), _numpy(attr[i]), _numpy(heat[i]), curves,
                               _display(p, xi[0])))
    return out


def _display(p, x: torch.Tensor) -> np.ndarray:
    if p.modality != "image":
        return _numpy(x)  # normalised features (F, T)
    mean = torch.tensor(p.transform.mean, device=x.device)[:, None, None]
    std = torch.tensor(p.transform.std, device=x.device)[:, None, None]
    return _numpy((x * std + mean).clamp(0, 1).permute(1, 2, 0))  # (H, W, C)


def _baseline_token(tokenizer) -> int:
    """What an explained token is replaced by: <unk> or [UNK], else padding, else a space, else id 0."""
    for token in (tokenizer.unk_id, tokenizer.pad_id):
        if token is not None:
            return token
    with contextlib.suppress(GroveError):
        space = tokenizer.encode(" ", add_special_tokens=False)
        if len(space) == 1:
            return space[0]
    return 0


def _token_strings(tokenizer, ids) -> list[str]:
    """Each token as text; special tokens, which decode to nothing, by their names ([CLS])."""
    inner = getattr(tokenizer, "tokenizer", None)  # a Hugging Face tokenizer's own vocabulary
    return [tokenizer.decode([i]) or (inner.id_to_token(i) if inner is not None else "") for i in ids]


def _texts(p, items, names, method, targets) -> list[Explanation]:
    model, tok = p.model, p.tokenizer
    pad = p.data["pad_id"]
    width = max(map(len, items))
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in items], device=p.device)  # (B, T)
    specials = [s for s in (getattr(tok, "cls_id", None), getattr(tok, "sep_id", None), pad) if s is not None]
    explained = ~torch.isin(ids, torch.tensor(specials, device=p.device))
    base = _baseline_token(tok)
    baseline = torch.where(explained, base, ids)
    forward = _probabilities(model)
    with torch.no_grad():
        probs = forward(ids)
    target = _chosen(probs, targets)
    embedding = model.get_submodule(model.embedding_layer)
    attr = attribution.tokens(embedding, forward, ids, target, method, baseline).detach()
    out = []
    for i, (row, name) in enumerate(zip(items, names)):
        n, t = len(row), int(target[i])
        ids_i, heat = ids[i : i + 1, :n], attr[i, :n]
        curves = deletion(lambda v: forward(v)[:, t], lambda m: torch.where(m, base, ids_i), heat, explained[i, :n])
        out.append(Explanation(name, p.task, p.modality, method, p.classes[t], float(probs[i, t]),
                               _top(probs[i], p.classes.__getitem__), _numpy(heat), _numpy(heat), curves,
                               _numpy(ids_i[0]), tokens=_token_strings(tok, row)))
    return out


def _next_token(p, ids: list[int], name, method, target) -> Explanation:
    model, tok = p.model, p.tokenizer
    block = getattr(getattr(model, "config", None), "block_size", None)
    ids = ids[-block:] if block else ids  # a GPT sees its last block_size tokens
    x = torch.tensor([ids], device=p.device)  # (1, T)
    forward = lambda v: model(v)[:, -1].float().softmax(-1)  # noqa: E731 (the next token's probabilities)
    with torch.no_grad():
        probs = forward(x)
    t = _chosen(probs, [target])
    base = _baseline_token(tok)
    baseline = torch.full_like(x, base)
    embedding = model.get_submodule(model.embedding_layer)
    heat = attribution.tokens(embedding, forward, x, t, method, baseline).detach()[0]
    explained = torch.ones_like(x[0], dtype=torch.bool)
    curves = deletion(lambda v: forward(v)[:, int(t)], lambda m: torch.where(m, base, x), heat, explained)
    word = lambda i: tok.decode([i])  # noqa: E731
    return Explanation(name, p.task, p.modality, method, word(int(t)), float(probs[0, t]), _top(probs[0], word),
                       _numpy(heat), _numpy(heat), curves, _numpy(x[0]), tokens=_token_strings(tok, ids))


def _transcript(p, item, name, method) -> Explanation:
    """Each character of the greedy transcript, explained at the frame where the path emits it."""
    from grove.data.loader import to_device

    model, blank = p.model, p.run.task.blank
    x = p.transform(to_device(item, p.device), False)["features"]  # (1, F, T)
    with torch.no_grad():
        log_probs, _ = model(x)  # (1, T', V)
    path = log_probs[0].argmax(-1).tolist()
    emitted = [(t, c) for t, c in enumerate(path) if c != blank and (t == 0 or c != path[t - 1])]
    alphabet = p.run.task.alphabet
    characters = [{"char": alphabet[c], "frame": round(t * x.shape[-1] / len(path))} for t, c in emitted]
    transcript = "".join(ch["char"] for ch in characters)
    if not emitted:
        zero = np.zeros(tuple(x.shape[1:]), np.float32)
        empty = {"auc": None, "random_auc": None, "fractions": [], "curve": [], "random_curve": []}
        return Explanation(name, p.task, p.modality, method, "", 0.0, [], zero[None], zero, empty, _numpy(x[0]))
    frames = torch.tensor([t for t, _ in emitted], device=p.device)
    chars = torch.tensor([c for _, c in emitted], device=p.device)
    n = len(emitted)
    forward = lambda v: model(v).log_probs[:, frames, chars].exp()  # noqa: E731 (N, n): character k in column k
    attr = attribution.dense(model, forward, x.expand(n, *x.shape[1:]), torch.arange(n, device=p.device), method)
    attr = attr.detach()  # (n, F, T)
    heat = attr.sum(0)
    with torch.no_grad():
        probability = float(forward(x)[0].mean())
    curves = deletion(lambda v: forward(v).mean(-1), lambda m: torch.where(m, 0.0, x), heat,
                      torch.ones_like(heat, dtype=torch.bool))
    return Explanation(name, p.task, p.modality, method, transcript, probability, [], _numpy(attr), _numpy(heat),
                       curves, _numpy(x[0]), characters=characters)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()
