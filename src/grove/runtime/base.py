"""What both predictors share: a run's (grove.predictor, PyTorch) and an export's (ONNX Runtime).

Each reads its inputs (`_read_image`, `_read_audio`, `_read_text`: one input -> what its batch
needs, or a GroveError) and predicts a batch of readable ones (`_predict_batch`); reading every
input first is what lets one unreadable file fail alone. Torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grove.errors import GroveError


class PredictorBase:
    task: str
    modality: str
    source: str  # "run" or "export", for messages

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
        if self.task == "lm":
            raise GroveError(f"this {self.source} is a language model: use generate (`grove generate PATH --prompt ...`)")
        if beam_width < 0:
            raise GroveError(f"beam_width must be at least 0 (0: greedy); got {beam_width}")
        if isinstance(inputs, (str, Path)) or (is_tensor(inputs) and inputs.dim() == 3):
            inputs = [inputs]  # one input: a path, a text or a CxHxW image
        read = {"image": self._read_image, "audio": self._read_audio, "text": self._read_text}[self.modality]
        items = []
        for item in inputs:
            try:
                items.append(read(item))
            except GroveError as err:
                items.append(err)
        good = [item for item in items if not isinstance(item, GroveError)]
        outputs = iter(self._predict_batch(good, top, beam_width) if good else [])
        return [item if isinstance(item, GroveError) else next(outputs) for item in items]

    def _predict_batch(self, items: list, top: int, beam_width: int) -> list:
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
