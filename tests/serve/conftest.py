import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")


class Server:
    """`grove serve ARGS` in its own process on a free loopback port (--port 0), as a user starts it."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grove", "serve", *map(str, args), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("serving ") or not line and self.proc.poll() is not None:
                break
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"grove serve did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split(" on ", 1)[1].split()[0]  # http://127.0.0.1:PORT

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="session")
def start_server():
    """start_server(*args, env=None) -> a running Server; every one is stopped at the end."""
    started = []

    def start(*args, env=None) -> Server:
        server = Server(*args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def served(start_server, tiny_runs):
    """One server for the session's API tests: an image run and its ONNX export, a text run, a
    keyword run, a transcription run and a GPT."""
    paths = [
        f"image={tiny_runs['image'][0]}", f"image-onnx={tiny_runs['image'][1]}", f"text={tiny_runs['text'][0]}",
        f"keyword={tiny_runs['keyword'][0]}", f"ctc={tiny_runs['ctc'][0]}", f"gpt={tiny_runs['gpt'][0]}",
    ]
    return start_server(*paths, "--threads", "1")
