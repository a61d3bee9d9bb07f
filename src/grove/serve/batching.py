"""Dynamic batching: the requests for one model grouped into one forward pass. Torch-free.

Each served model has a `ModelWorker`: a bounded queue of requests, a batcher coroutine on the
server's event loop, and one inference thread. The batcher takes the oldest request and waits for
more until the batch holds `max_batch` inputs or the oldest has waited `max_delay` seconds (no
wait at all once it has waited that long, as it has whenever the previous batch ran that long),
runs them as one `predict_batch` on the thread, and hands each caller its own rows. Generation
steps run on the same thread between batches, so one model never runs two forward passes at once
and the event loop stays free for health checks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from grove.errors import GroveError

log = logging.getLogger("grove.serve")


class QueueFull(Exception):
    """The model's queue has no room: the caller should retry later (HTTP 503)."""


class DeadlineExceeded(Exception):
    """The request was not answered within its time (HTTP 504)."""


@dataclass
class Job:
    items: list  # what predictor.read returned, one per input
    top: int
    beam_width: int
    future: asyncio.Future
    enqueued: float  # loop time
    cancelled: bool = False  # the caller stopped waiting: skipped if not yet run


@dataclass
class ModelWorker:
    name: str
    predictor: object  # grove.predictor.Predictor or grove.runtime.predictor.ExportedPredictor
    max_batch: int = 32
    max_delay: float = 0.005  # seconds
    queue_size: int = 256  # inputs waiting, plus generations under way
    on_batch: object = None  # called with each batch's size (the batch-size histogram)
    pending: deque = field(default_factory=deque)
    waiting: int = 0  # inputs in `pending`
    streams: int = 0  # generations under way

    def __post_init__(self):
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"grove-{self.name}")
        self._wakeup = asyncio.Event()
        self._task = None

    @property
    def depth(self) -> int:
        return self.waiting + self.streams

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._batch_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    def _admit(self, n: int) -> None:
        # A request larger than the whole queue still runs when nothing else waits.
        if self.depth and self.depth + n > self.queue_size:
            raise QueueFull(f"model {self.name!r} has {self.depth} inputs waiting (queue size {self.queue_size})")

    async def run(self, fn, *args):
        """fn(*args) on the model's inference thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- predictions -----------------------------------------------------------------------------
    async def predict(self, items: list, top: int, beam_width: int, timeout: float) -> list:
        """Per item, its prediction; QueueFull at once when there is no room, DeadlineExceeded
        after `timeout` seconds."""
        self._admit(len(items))
        loop = asyncio.get_running_loop()
        job = Job(items, top, beam_width, loop.create_future(), loop.time())
        self.pending.append(job)
        self.waiting += len(items)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no answer from model {self.name!r} within {timeout:g} s") from None
        finally:
            job.cancelled = True  # a no-op once it ran; otherwise the batcher skips it

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Wait for the batch to fill, at most max_delay after its oldest request arrived.
            while self.waiting < self.max_batch:
                remaining = self.pending[0].enqueued + self.max_delay - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._run_batch(batch)

    def _take(self) -> list[Job]:
        """The oldest requests that fit one batch: up to max_batch inputs (one larger request runs
        alone), sharing the oldest's beam width; requests nobody waits for are dropped."""
        batch, size = [], 0
        while self.pending:
            job = self.pending[0]
            if job.cancelled:
                self.pending.popleft()
                self.waiting -= len(job.items)
                continue
            if batch and (size + len(job.items) > self.max_batch or job.beam_width != batch[0].beam_width):
                break
            self.pending.popleft()
            self.waiting -= len(job.items)
            batch.append(job)
            size += len(job.items)
        return batch

    async def _run_batch(self, batch: list[Job]) -> None:
        items = [item for job in batch for item in job.items]
        top = max(job.top for job in batch)
        if self.on_batch is not None:
            self.on_batch(len(items))
        try:
            results = await self.run(self.predictor.predict_batch, items, top, batch[0].beam_width)
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0], error=err)
                return
            # One request broke the batch: run each alone, so only the one that breaks fails.
            for job in batch:
                await self._run_batch([job])
            return
        start = 0
        for job in batch:
            rows = results[start : start + len(job.items)]
            start += len(job.items)
            _settle(job, [row[: job.top] if isinstance(row, list) else row for row in rows])

    # -- generation ------------------------------------------------------------------------------
    async def generate(self, prompt: str, options: dict, timeout: float):
        """An async iterator of the continuation's pieces, each produced on the inference thread
        (so concurrent generations take turns token by token). The first piece is computed before
        this returns: a bad prompt or option raises its GroveError here, QueueFull when there is
        no room, DeadlineExceeded when the first piece takes longer than `timeout`."""
        self._admit(1)
        self.streams += 1
        try:
            pieces = self.predictor.generate(prompt, **options)
            try:
                first = await asyncio.wait_for(self.run(next, pieces, None), timeout)
            except asyncio.TimeoutError:
                raise DeadlineExceeded(f"no first token from model {self.name!r} within {timeout:g} s") from None
        except BaseException:
            self.streams -= 1
            raise
        return self._stream(first, pieces)

    async def _stream(self, first, pieces):
        try:
            piece = first
            while piece is not None:
                yield piece
                piece = await self.run(next, pieces, None)
        finally:
            self.streams -= 1


def _settle(job: Job, results=None, error: Exception | None = None) -> None:
    if job.future.done():
        return
    if error is None:
        job.future.set_result(results)
        return
    if not isinstance(error, GroveError):
        log.exception("model batch failed", exc_info=error)
    job.future.set_exception(error)
