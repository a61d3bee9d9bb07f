"""A ModelWorker (grove.serve.batching) in this process, around a stand-in model: explanations run
on the model's one inference thread, never beside a batch, and hold their places in its queue."""

import asyncio
import threading
import time

import pytest

from grove.serve.batching import DeadlineExceeded, ModelWorker, QueueFull


class SlowModel:
    """Work that takes a while and notes the threads it ran on and whether two pieces overlapped."""

    def __init__(self):
        self.running, self.overlapped, self.threads = 0, False, set()

    def work(self, seconds: float, answer=None):
        self.running += 1
        self.overlapped |= self.running > 1
        self.threads.add(threading.current_thread().name)
        time.sleep(seconds)
        self.running -= 1
        return answer

    def predict_batch(self, items, top, beam_width):
        return self.work(0.05, [[("a", 1.0)] for _ in items])


def test_explanations_share_the_inference_thread_and_the_queue():
    async def scenario():
        model = SlowModel()
        w = ModelWorker("m", model, max_batch=4, max_delay=0, queue_size=4)
        w.start()
        try:
            explained = asyncio.ensure_future(w.explain(lambda: model.work(0.2, ["why"]), 3, timeout=5))
            await asyncio.sleep(0.02)
            assert w.depth == 3
            with pytest.raises(QueueFull):
                await w.explain(lambda: [], 2, timeout=5)
            predicted = await w.predict([b"x"], lambda xs: xs, top=1, beam_width=0, timeout=5, inline=True)
            assert await explained == ["why"] and predicted == [[("a", 1.0)]]

            busy = asyncio.ensure_future(w.explain(lambda: model.work(0.2), 1, timeout=5))
            await asyncio.sleep(0.02)
            ran = []
            with pytest.raises(DeadlineExceeded):  # still waiting for the thread: it never runs
                await w.explain(lambda: ran.append(1), 1, timeout=0.05)
            await busy
            await asyncio.sleep(0.02)
            assert ran == [] and w.depth == 0
            assert not model.overlapped and len(model.threads) == 1
        finally:
            await w.stop()

    asyncio.run(scenario())
