"""grove: train, evaluate and use CNN, RNN and Transformer models for images, speech and text."""

__version__ = "0.1.0"


def load(run_dir, checkpoint: str = "best", device: str | None = None):
    """Load a finished (or interrupted) run for prediction: `grove.load(run).predict(images)`."""
    from grove.predictor import Predictor

    return Predictor.load(run_dir, checkpoint=checkpoint, device=device)
