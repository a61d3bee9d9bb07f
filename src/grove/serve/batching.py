"""Dynamic batching: the requests for one model grouped into one forward pass. Torch-free.

Each served model has a `ModelWorker`: a bounded queue of requests, a batcher coroutine on the
server's event loop, and one inference thread. The batcher takes the oldest request and, while
other requests for the model are still being read and decoded, waits for them until the batch
holds `max_batch` inputs or the oldest has waited `max_delay` seconds; it never waits for
requests that have not arrived (so a lone client gets no added latency, and under load, when
the previous batch ran longer than max_delay, a full queue goes at once). It runs the batch as
one `predict_batch` on the thread and hands each caller its own rows. Generation
steps and explanations run on the same thread between batches, so one model never runs two
forward passes at once and the event loop stays free for health checks.
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
    arriving: int = 0  # inputs being decoded, soon in `pending`
    streams: int = 0  # generations under way
    explaining: int = 0  # inputs being explained, or waiting for the thread to explain them

    def __post_init__(self):
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"grove-{self.name}")
        self._wakeup = asyncio.Event()
        self._task = None

    @property
    def depth(self) -> int:
        return self.waiting + self.arriving + self.streams + self.explaining

    @property
    def full(self) -> bool:
        return self.depth >= self.queue_size

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
    async def predict(self, inputs: list, read, top: int, beam_width: int, timeout: float, inline: bool = False) -> list:
        """Per input, its prediction. read(inputs) gives them as predict_batch takes them: on a
        worker thread, so decoding stays off the event loop, or here when `inline` (small inputs,
        for which the thread hop costs more than the decoding); its exceptions are the caller's.
        QueueFull at once when there is no room, DeadlineExceeded after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        self._admit(len(inputs))  # before decoding: a refusal costs nothing
        if inline:
            items = read(inputs)
        else:
            self.arriving += len(inputs)
            try:
                items = await loop.run_in_executor(None, read, inputs)
            finally:
                self.arriving -= len(inputs)
                self._wakeup.set()  # the batcher may be waiting for this request
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
            # Wait for requests on their way, at most max_delay after the oldest arrived.
            while self.waiting < self.max_batch and self.arriving:
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
        """The oldest requests that fit one batch: up to max_batch inputs (a larger request runs
        alone, in passes of max_batch), sharing the oldest's beam width; requests nobody waits for
        are dropped."""
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
            for start in range(0, len(items), self.max_batch):
                self.on_batch(min(self.max_batch, len(items) - start))
        try:
            results = await self.run(self._predict_chunks, items, top, batch[0].beam_width)
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

    def _predict_chunks(self, items: list, top: int, beam_width: int) -> list:
        """predict_batch in passes of at most max_batch inputs (a larger request is split)."""
        results = []
        for start in range(0, len(items), self.max_batch):
            results += self.predictor.predict_batch(items[start : start + self.max_batch], top, beam_width)
        return results

    # -- explanations ----------------------------------------------------------------------------
    async def explain(self, explain_all, n: int, timeout: float) -> list:
        """explain_all() on the inference thread, its n inputs counted in the queue until it has
        run: QueueFull at once when there is no room, DeadlineExceeded when it has not finished
        within `timeout` seconds (then, if it has not started, it never runs)."""
        loop = asyncio.get_running_loop()
        self._admit(n)
        self.explaining += n
        job = self.executor.submit(explain_all)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._explained, n))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no explanation from model {self.name!r} within {timeout:g} s") from None

    def _explained(self, n: int) -> None:
        self.explaining -= n

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
