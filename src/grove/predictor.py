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

import numpy as np
import torch

from grove.data.loader import to_device
from grove.engine.build import build_model
from grove.engine.precision import pick_device
from grove.errors import GroveError
from grove.models.utils import load_weights
from grove.rundir import META, RunDir
from grove.tasks.classification import top_k


class Predictor:
    def __init__(self, model: torch.nn.Module, meta: dict, device: torch.device, run: RunDir):
        self.model = model.eval()
        self.meta = meta
        self.data = meta["data"]
        self.task = meta["task"]
        self.classes: list[str] = meta["classes"]
        self.device = device
        self.modality = self.data["modality"]
        if self.modality == "image":
            from grove.data.image import ImageTransform

            self.transform = ImageTransform.from_dict(self.data["transform"])
        elif self.modality == "audio":
            from grove.data.audio import AudioTransform

            self.transform = AudioTransform.from_dict(self.data["transform"])
        else:
            from grove.data.tokenizers import load_tokenizer

            self.tokenizer = load_tokenizer(run.path / "data")

    @classmethod
    def load(cls, run_dir, checkpoint: str = "best", device: str | None = None) -> "Predictor":
        run = RunDir.open(run_dir)
        meta = run.read_json(META)
        model = build_model(meta["model"]["name"], meta["model"]["options"])
        weights, _ = run.load_checkpoint(checkpoint, with_state=False)
        load_weights(model, weights)
        torch_device = pick_device(device or "auto")
        return cls(model.to(torch_device), meta, torch_device, run)

    # -- classification and transcription --------------------------------------------------------
    @torch.no_grad()
    def predict(self, inputs, top: int = 5, beam_width: int = 8):
        """Classifiers: per input, the `top` most probable (label, probability) pairs, best first.
        Transcription: per input, the transcript (CTC prefix beam search; beam_width 0 is greedy)."""
        if self.task == "lm":
            raise GroveError("this run is a language model: use generate (`grove generate RUN --prompt ...`)")
        if isinstance(inputs, (str, Path)) or (isinstance(inputs, torch.Tensor) and inputs.dim() == 3):
            inputs = [inputs]
        inputs = list(inputs)
        if self.task == "ctc":
            from grove.data.audio import load_audio_batch
            from grove.tasks.ctc import CTCTask

            decoder = CTCTask(self.data["alphabet"])
            transcripts = []
            for file in inputs:  # one at a time: no padding to mask, and beam search is per utterance
                features = self.transform(to_device(load_audio_batch(file, self.data), self.device), False)
                transcripts += decoder.decode(self.model(features["features"], features["lengths"]), beam_width=beam_width)
            return transcripts
        batch = {"image": self._image_batch, "audio": self._audio_batch, "text": self._text_batch}[self.modality](inputs)
        x = batch if self.modality == "text" else self.transform(batch, False)
        return top_k(self.model(x).float(), self.classes, top)

    def _image_batch(self, images) -> torch.Tensor:
        """Paths, PIL images, HxW(xC) uint8 arrays or CxHxW uint8 tensors -> a uint8 batch, all
        resized and cropped the way training images were decoded."""
        from PIL import Image

        from grove.data.image import image_to_tensor, load_image

        size, channels = self.data["load_size"], self.data["channels"]
        tensors = []
        for image in images:
            if isinstance(image, (str, Path)):
                tensors.append(load_image(image, size, channels))
                continue
            if isinstance(image, torch.Tensor) and image.dim() == 3:
                image = image.permute(1, 2, 0).squeeze(-1).numpy()
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image.astype(np.uint8))
            if not isinstance(image, Image.Image):
                raise GroveError(f"cannot predict on a {type(image).__name__}: pass image paths, PIL images, arrays or CxHxW tensors")
            tensors.append(image_to_tensor(image, size, channels))
        return torch.stack(tensors).to(self.device)

    def _audio_batch(self, files) -> torch.Tensor:
        """WAV/FLAC paths -> clips fitted to the training clip length, as keyword data was."""
        from grove.data.audio import load_audio_batch

        return torch.cat([load_audio_batch(f, self.data) for f in files]).to(self.device)

    def _text_batch(self, texts) -> torch.Tensor:
        ids = self.tokenizer.encode_batch([str(t) for t in texts], add_special_tokens=True, max_length=self.data["max_len"])
        if not all(ids):
            raise GroveError("cannot classify an empty text")
        width = max(map(len, ids))
        padded = [row + [self.data["pad_id"]] * (width - len(row)) for row in ids]
        return torch.tensor(padded, dtype=torch.long, device=self.device)

    # -- language models -------------------------------------------------------------------------
    def generate(
        self, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = None,
        top_p: float | None = None, seed: int | None = None,
    ) -> Iterator[str]:
        """The continuation of `prompt`, yielded piece by piece as tokens are produced."""
        if self.task != "lm":
            raise GroveError("only language-model runs generate text; use predict for this run")
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)  # GroveError for unknown characters
        if not ids:
            raise GroveError("the prompt is empty after tokenization: give at least one known character or word")
        if seed is not None:
            torch.manual_seed(seed)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        try:
            tokens = self.model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
            produced: list[int] = []
            shown = ""
            for token in tokens:
                produced.append(int(token[0, 0]))
                text = self.tokenizer.decode(produced)
                # Multi-byte characters can take several tokens: emit only whole new text.
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    yield text[len(shown):]
                    shown = text
        except ValueError as err:  # bad sampling options
            raise GroveError(str(err)) from None
