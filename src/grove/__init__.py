"""grove: train, evaluate and use CNN, RNN and Transformer models for images, speech and text."""

__version__ = "0.1.0"


def load(path, checkpoint: str = "best", device: str | None = None, threads: int | None = None, int8: bool = False):
    """A run directory or an export folder, ready to predict: `grove.load(path).predict(images)`.

    A run (finished or interrupted) is rebuilt in PyTorch from its `checkpoint`, on `device`. An
    export folder (`grove export RUN`) runs on ONNX Runtime without importing torch, with the same
    API and answers (`int8=True` runs its int8 graph instead, when it was exported with --int8).
    `threads` caps the CPU threads either uses (default: ONNX Runtime takes the physical cores,
    PyTorch its own default).
    """
    from grove.runtime.manifest import check_export_dir, is_export_dir

    if is_export_dir(path):
        from grove.runtime.predictor import ExportedPredictor

        return ExportedPredictor.load(path, threads=threads, int8=int8)
    check_export_dir(path)  # a graph without its export.json is an export folder that lost it
    from grove.predictor import Predictor

    if threads is not None:
        import torch

        from grove.errors import GroveError

        if threads < 1:
            raise GroveError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return Predictor.load(path, checkpoint=checkpoint, device=device)
