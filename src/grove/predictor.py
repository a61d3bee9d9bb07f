"""Use a trained run from Python: `grove.load(run_dir).predict(images)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from grove.data.image import ImageTransform, image_to_tensor, load_image
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
        """Paths, PIL images, HxW(xC) uint8 arrays or CxHxW uint8 tensors -> a uint8 batch, all
        resized and cropped the way training images were decoded."""
        from PIL import Image

        tensors = []
        for image in images:
            if isinstance(image, (str, Path)):
                tensors.append(load_image(image, self.load_size, self.channels))
                continue
            if isinstance(image, torch.Tensor) and image.dim() == 3:
                image = image.permute(1, 2, 0).squeeze(-1).numpy()
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image.astype(np.uint8))
            if not isinstance(image, Image.Image):
                raise GroveError(f"cannot predict on a {type(image).__name__}: pass image paths, PIL images, arrays or CxHxW tensors")
            tensors.append(image_to_tensor(image, self.load_size, self.channels))
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
