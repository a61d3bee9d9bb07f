"""What both predictors share: a run's (grove.predictor, PyTorch) and an export's (ONNX Runtime).

Each reads its inputs (`read`: one input -> what its batch needs, or a GroveError) and predicts a
batch of readable ones (`predict_batch`); reading every input first is what lets one unreadable
file fail alone, and reading apart from predicting is what lets a server batch requests
(grove.serve). `input_info` says what the model takes. Torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grove.errors import GroveError


class PredictorBase:
    task: str
    modality: str
    source: str  # "run" or "export", for messages
    recipe: str  # the recipe the model was trained with

    def predict(self, inputs, top: int = 5, beam_width: int = 8) -> list:
        """Classifiers: per input, the `top` most probable (label, probability) pairs, best first.
        Transcription: per input, the transcript (CTC prefix beam search; beam_width 0 is greedy).
        The first input that cannot be read raises its GroveError; `predict_each` goes on instead."""
        results = self.predict_each(inputs, top, beam_width)
        for result in results:
            if isinstance(result, GroveError):
                raise result
        return results

    def predict_each(self, inputs, top: int = 5, beam_width: int = 8) -> list:
        """As `predict`, but an input that cannot be read gives its GroveError in its place and
        every other input is still predicted."""
        self.check_predict_options(top, beam_width)
        if isinstance(inputs, (str, Path, bytes)) or (is_tensor(inputs) and inputs.dim() == 3):
            inputs = [inputs]  # one input: a path, a text, an encoded file or a CxHxW image
        items = []
        for item in inputs:
            try:
                items.append(self.read(item))
            except GroveError as err:
                items.append(err)
        good = [item for item in items if not isinstance(item, GroveError)]
        outputs = iter(self.predict_batch(good, top, beam_width) if good else [])
        return [item if isinstance(item, GroveError) else next(outputs) for item in items]

    def explain(self, inputs, method: str = "auto", target: str | None = None) -> list:
        """Explanations need the model's gradients: a run directory has them (grove.predictor)."""
        raise GroveError(f"this {self.source} cannot explain: explanations take gradients through the PyTorch model, "
                         "so pass the run directory the export came from")

    def check_predict_options(self, top: int, beam_width: int) -> None:
        if self.task == "lm":
            raise GroveError(f"this {self.source} is a language model: use generate (`grove generate PATH --prompt ...`)")
        if top < 1:
            raise GroveError(f"top must be at least 1; got {top}")
        if beam_width < 0:
            raise GroveError(f"beam_width must be at least 0 (0: greedy); got {beam_width}")

    def read(self, item):
        """One input (a path, encoded bytes, a text, an image array ...) -> what `predict_batch`
        takes, or a one-line GroveError when it cannot be read."""
        return {"image": self._read_image, "audio": self._read_audio, "text": self._read_text}[self.modality](item)

    def predict_batch(self, items: list, top: int, beam_width: int) -> list:
        """Per item from `read`: the top (label, probability) pairs, or the transcript; in one
        forward pass where the task allows."""
        raise NotImplementedError

    def input_info(self) -> dict:
        """What the model takes, for a client: {"kind": "image", "size", "channels"},
        {"kind": "audio", "sample_rate", "clip_seconds" (None: any length)}, {"kind": "text",
        "max_tokens"} or, for a language model, {"kind": "prompt", "context_tokens"}."""
        raise NotImplementedError

    def _read_image(self, image):
        raise NotImplementedError

    def _read_audio(self, file):
        raise NotImplementedError

    def _read_text(self, text):
        raise NotImplementedError


def is_tensor(x) -> bool:
    """A torch tensor, recognised without importing torch (only someone who imported it has one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)
