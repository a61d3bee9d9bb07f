"""Use a trained run from Python: `grove.load(run_dir)`.

    .predict(images | texts | wav paths)   classifiers: per input, the top (label, probability)
                                           pairs; transcription: per input, the transcript
    .generate(prompt, ...)                 language models: the new text, piece by piece

Everything is rebuilt from the run directory alone (meta.json, data/, a checkpoint), decoded the
way the training data was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from grove.data.loader import to_device
from grove.errors import GroveError, did_you_mean
from grove.rundir import LoadedRun, load_run
from grove.runtime.base import PredictorBase, is_tensor
from grove.tasks.classification import top_k


class Predictor(PredictorBase):
    source = "run"

    def __init__(self, loaded: LoadedRun):
        self.run = loaded
        self.model = loaded.model
        self.meta = loaded.meta
        self.recipe = loaded.meta.recipe
        self.data = loaded.meta.data
        self.task = loaded.meta.task
        self.classes: list[str] = loaded.classes
        self.device = loaded.device
        self.modality = loaded.meta.modality
        self.transform = loaded.transform
        self.tokenizer = loaded.tokenizer

    @classmethod
    def load(cls, run_dir, checkpoint: str = "best", device: str | None = None) -> "Predictor":
        return cls(load_run(run_dir, checkpoint, device or "auto"))

    # -- classification and transcription --------------------------------------------------------
    def input_info(self) -> dict:
        d = self.data
        if self.task == "lm":
            config = getattr(self.model, "config", None)  # a GPT sees block_size tokens; an RNN any number
            return {"kind": "prompt", "context_tokens": getattr(config, "block_size", None)}
        if self.modality == "image":
            return {"kind": "image", "size": d["load_size"], "channels": d["channels"]}
        if self.modality == "audio":
            clip = None if d.get("kind") == "transcription" else d["clip_seconds"]
            return {"kind": "audio", "sample_rate": d["sample_rate"], "clip_seconds": clip}
        return {"kind": "text", "max_tokens": d["max_len"]}

    @torch.no_grad()
    def predict_batch(self, items: list, top: int, beam_width: int) -> list:
        if self.task == "ctc":
            transcripts = []
            for clip in items:  # one at a time: no padding to mask, and beam search is per utterance
                features = self.transform(to_device(clip, self.device), False)
                outputs = self.model(features["features"], features["lengths"])
                transcripts += self.run.task.decode(outputs, beam_width=beam_width)
            return transcripts
        if self.modality == "text":
            width = max(map(len, items))
            padded = [row + [self.data["pad_id"]] * (width - len(row)) for row in items]
            x = torch.tensor(padded, dtype=torch.long, device=self.device)
        else:
            x = self.transform(torch.cat(items).to(self.device), False)
        return top_k(self.model(x).float(), self.classes, top)

    def _read_image(self, image) -> torch.Tensor:
        """A path, PIL image, HxW(xC) uint8 array or CxHxW uint8 tensor -> a (1, C, H, W) uint8
        batch, resized and cropped the way training images were decoded."""
        from grove.runtime.inputs import read_image

        if isinstance(image, torch.Tensor) and image.dim() == 3:
            image = image.permute(1, 2, 0).squeeze(-1).numpy()
        return torch.from_numpy(read_image(image, self.data["load_size"], self.data["channels"]))[None]

    def _read_audio(self, file):
        """A WAV/FLAC path -> a keyword clip fitted to the training clip length (1, L), or a
        transcription input {"audio", "lengths"}."""
        from grove.data.audio import load_audio_batch

        return load_audio_batch(file, self.data)

    def _read_text(self, text) -> list[int]:
        ids = self.tokenizer.encode_batch([str(text)], add_special_tokens=True, max_length=self.data["max_len"])[0]
        if not ids:
            raise GroveError(f"cannot classify {str(text)!r}: it is empty after tokenization")
        return ids

    # -- explanations ----------------------------------------------------------------------------
    def explain(self, inputs, method: str = "auto", target: str | None = None) -> list:
        """Per input, an Explanation (grove.explain) of the predicted label, or of `target` (a class
        name; a language model's next token), by `method`: auto, ig, saliency, gradcam, occlusion
        or attention. Prompts, for a language model, explain the token that comes next. The first
        input that cannot be read raises its GroveError; `explain_each` goes on instead."""
        results = self.explain_each(inputs, method, target)
        for result in results:
            if isinstance(result, GroveError):
                raise result
        return results

    def explain_each(self, inputs, method: str = "auto", target: str | None = None) -> list:
        """As `explain`, but an input that cannot be read gives its GroveError in its place and the
        others are still explained (together, in one batch where the task allows)."""
        from grove.explain import explain_items

        if isinstance(inputs, (str, Path, bytes)) or (is_tensor(inputs) and inputs.dim() == 3):
            inputs = [inputs]
        if not len(inputs):
            raise GroveError("nothing to explain: give at least one input")
        targets = None if target is None else [self.target_index(target)]
        read = self.read_prompt if self.task == "lm" else self.read
        items, names = [], []
        for i, x in enumerate(inputs):
            try:
                items.append(read(x))
            except GroveError as err:
                items.append(err)
            names.append(str(x) if isinstance(x, (str, Path)) else f"#{i}")
        good = [i for i, item in enumerate(items) if not isinstance(item, GroveError)]
        found = iter(explain_items(self, [items[i] for i in good], [names[i] for i in good], method,
                                   None if targets is None else targets * len(good)) if good else [])
        return [item if isinstance(item, GroveError) else next(found) for item in items]

    def target_index(self, target: str) -> int:
        """The class index of a label (a language model: the token id of one token) to explain."""
        if self.task == "ctc":
            raise GroveError("a transcription is explained character by character as decoded: drop --target")
        if self.task == "lm":
            try:
                ids = self.tokenizer.encode(str(target), add_special_tokens=False)
            except GroveError as err:
                raise GroveError(f"the target {target!r} is not a token of this model: {err}") from None
            if len(ids) != 1:
                raise GroveError(f"the target {target!r} is {len(ids)} tokens for this model: give one token")
            return ids[0]
        if str(target) not in self.classes:
            shown = ", ".join(self.classes[:20]) + (" ..." if len(self.classes) > 20 else "")
            raise GroveError(f"unknown target label '{target}'{did_you_mean(target, self.classes)}; the labels are {shown}")
        return self.classes.index(str(target))

    def read_prompt(self, prompt) -> list[int]:
        """A language model's prompt as token ids, or a GroveError when nothing of it is known."""
        ids = self.tokenizer.encode(str(prompt), add_special_tokens=False)  # GroveError for unknown characters
        if not ids:
            raise GroveError("the prompt is empty after tokenization: give at least one known character or word")
        return ids

    # -- language models -------------------------------------------------------------------------
    def generate(
        self, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = None,
        top_p: float | None = None, seed: int | None = None,
    ) -> Iterator[str]:
        """The continuation of `prompt`, yielded piece by piece as tokens are produced."""
        if self.task != "lm":
            raise GroveError("only language-model runs generate text; use predict for this run")
        ids = self.read_prompt(prompt)
        if seed is not None:
            torch.manual_seed(seed)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        try:
            tokens = self.model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
            # Decoding after the prompt's tokens gives what joins them: the space before a new
            # word of a word-level model, none inside a word of a character model.
            produced = list(ids)
            shown = self.tokenizer.decode(produced)
            for token in tokens:
                produced.append(int(token[0, 0]))
                text = self.tokenizer.decode(produced)
                # Multi-byte characters can take several tokens: emit only whole new text.
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    yield text[len(shown):]
                    shown = text
        except ValueError as err:  # bad sampling options
            raise GroveError(str(err)) from None
