"""`grove report RUN`: one self-contained HTML page about a finished run.

It shows the recipe and the command that trains it again; the data (splits, classes, skipped
files); the training curves; the test metrics (val where there is no test split), per class and as a
confusion matrix, from the same evaluation as `grove evaluate`; for classifiers the calibration
(reliability diagram, expected calibration error) and the most confident mistakes with their
explanations; for language models generated samples, for transcription models transcripts with
their errors marked; compute (parameters, FLOPs, time, throughput, MFU), privacy (epsilon, delta)
and a model card, where the run records them.
"""

from __future__ import annotations

from pathlib import Path

from grove.errors import GroveError
from grove.files import atomic_write
from grove.rundir import SUMMARY, RunDir


def write_report(run_dir, out=None, device: str = "auto") -> Path:
    """Writes the report of a finished run to `out` (default RUN/report.html), all at once or not
    at all, and returns its path."""
    from grove.report.collect import gather
    from grove.report.render import render
    from grove.runtime.manifest import is_export_dir

    if is_export_dir(run_dir):
        raise GroveError(f"{run_dir} is an export folder: a report reads the run directory it was exported from")
    run = RunDir.open(Path(run_dir).resolve())  # the report names the run wherever it is opened
    if not (run.path / SUMMARY).is_file():
        raise GroveError(f"{run.path} has no {SUMMARY}: the run is still training or was stopped before it ended; "
                         f"report on a finished run (`grove train --resume {run.path}` finishes this one)")
    out = Path(out) if out is not None else run.path / "report.html"
    if out.is_dir():
        raise GroveError(f"--out {out} is a folder: name the .html file to write")
    try:
        page = render(gather(run, device))
    except OSError as err:  # evaluation writes eval_<split>.json and plots into the run, as `grove evaluate` does
        raise GroveError(f"cannot write into {run.path}: {err.strerror or err}; a report saves its evaluation and "
                         "plots in the run directory, so report on a copy you can write") from None
    try:
        atomic_write(out, page)
    except OSError as err:
        raise GroveError(f"cannot write the report to {out}: {err.strerror or err}; choose another --out") from None
    return out


__all__ = ["write_report"]
