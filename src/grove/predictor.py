"""Use a trained run from Python: `grove.load(run_dir).predict(images)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from grove.data.image import ImageTransform, load_image
from grove.engine.build import build_model
from grove.engine.precision import pick_device
from grove.errors import GroveError
from grove.models.utils import load_weights
from grove.rundir import META, RunDir
from grove.tasks.classification import top_k


class Predictor:
    def __init__(self, model: torch.nn.Module, meta: dict, device: torch.device):
        self.model = model.eval()
        self.meta = meta
        self.classes: list[str] = meta["classes"]
        self.device = device
        data = meta["data"]
        self.transform = ImageTransform.from_dict(data["transform"])
        self.channels, self.load_size = data["channels"], data["load_size"]

    @classmethod
    def load(cls, run_dir, checkpoint: str = "best", device: str | None = None) -> "Predictor":
        run = RunDir.open(run_dir)
        meta = run.read_json(META)
        model = build_model(meta["model"]["name"], meta["model"]["options"])
        weights, _ = run.load_checkpoint(checkpoint, with_state=False)
        load_weights(model, weights)
        torch_device = pick_device(device or "auto")
        return cls(model.to(torch_device), meta, torch_device)

    def _as_batch(self, images) -> torch.Tensor:
        """Paths, PIL images, HxW(xC) uint8 arrays or CxHxW uint8 tensors -> a uint8 batch."""
        from PIL import Image

        tensors = []
        for image in images:
            if isinstance(image, (str, Path)):
                tensors.append(load_image(image, self.load_size, self.channels))
                continue
            if isinstance(image, Image.Image):
                image = np.asarray(image.convert("L" if self.channels == 1 else "RGB"))
            if isinstance(image, np.ndarray):
                image = torch.from_numpy(image if image.ndim == 3 else image[..., None]).permute(2, 0, 1)
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != self.channels:
                raise GroveError(f"expected an image with {self.channels} channel(s) (path, PIL image, array or CxHxW tensor)")
            if tuple(image.shape[1:]) != (self.load_size, self.load_size):
                image = torch.nn.functional.interpolate(
                    image[None].float(), size=(self.load_size, self.load_size), mode="bilinear", antialias=True
                )[0].round().clamp(0, 255)
            tensors.append(image.to(torch.uint8))
        return torch.stack(tensors)

    @torch.no_grad()
    def logits(self, images) -> torch.Tensor:
        x = self.transform(self._as_batch(images).to(self.device), False)
        return self.model(x).float()

    def predict(self, images, top: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the `top` most probable (label, probability) pairs, best first."""
        if isinstance(images, (str, Path)) or (hasattr(images, "dim") and images.dim() == 3):
            images = [images]
        return top_k(self.logits(list(images)), self.classes, top)
