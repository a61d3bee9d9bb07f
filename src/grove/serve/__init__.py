"""`grove serve`: runs and exports behind one HTTP server, with dynamic batching and a demo page.

    serve(["runs/digits-cnn/...", "words=runs/spoken-words-cnn/.../export"], port=8000)

Each path is a run directory (PyTorch, on the best device) or an export folder (ONNX Runtime,
without torch); NAME=PATH names it, otherwise it is named after its recipe. See grove.serve.app
for the API and grove.serve.batching for how requests are batched. SIGTERM or Ctrl-C drains:
readiness turns false, new requests get 503, requests under way finish, then the process exits 0.
"""

from __future__ import annotations

import errno
import gc
import ipaddress
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import uvicorn

from grove.errors import GroveError
from grove.serve.app import Limits, ServerState, create_app
from grove.serve.batching import ModelWorker

NAME = r"[A-Za-z0-9._-]+"
DRAIN_GRACE = 0.5  # seconds of 503s after SIGTERM at least, so clients and balancers see the drain


def load_models(paths: list[str], threads: int | None = None, device: str | None = None, int8: bool = False) -> dict:
    """{name: predictor} for "PATH" or "NAME=PATH" entries; a model is named after its recipe
    unless NAME says otherwise, and names must be distinct."""
    import grove
    from grove.runtime.manifest import is_export_dir

    predictors = {}
    for entry in paths:
        name, sep, path = entry.partition("=")
        if not sep or not path:
            name, path = "", entry
        elif not re.fullmatch(NAME, name):
            raise GroveError(f"model name {name!r} in {entry!r}: use letters, digits, '.', '_' or '-' (NAME=PATH)")
        if is_export_dir(path):
            if device:
                raise GroveError("--device is for run directories: export folders run on ONNX Runtime")
            predictor = grove.load(path, threads=threads, int8=int8)
        else:
            if int8:
                raise GroveError(f"--int8 runs export folders' int8 graphs; {path} is a run directory")
            predictor = grove.load(path, device=device or "auto", threads=threads)
        name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", Path(predictor.recipe).stem).strip("-") or "model"
        if name in predictors:
            raise GroveError(f"two models would be named {name!r}: name each with NAME=PATH")
        predictors[name] = predictor
    return predictors


def serve(paths: list[str], host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32,
          max_delay_ms: float = 5.0, queue: int = 256, api_key_env: str | None = None, limits: Limits | None = None,
          threads: int | None = None, device: str | None = None, int8: bool = False) -> None:
    """Serve the models until SIGTERM or Ctrl-C, then drain and return."""
    for name, value in (("max_batch", max_batch), ("queue", queue)):
        if value < 1:
            raise GroveError(f"{name} (--{name.replace('_', '-')}) must be at least 1; got {value}")
    if max_delay_ms < 0:
        raise GroveError(f"max_delay_ms (--max-delay-ms) must be at least 0; got {max_delay_ms}")
    if not 0 <= port <= 65535:
        raise GroveError(f"port (--port) must be 0 (a free port) to 65535; got {port}")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise GroveError(f"--api-key-env {api_key_env}: the environment variable {api_key_env} is not set or empty")
    sock = bind(host, port)  # before loading: a port in use is reported at once
    if not _is_loopback(host) and api_key is None:
        print(f"warning: serving on {host} without an API key: anyone who can reach this port can use the models "
              "(set one with --api-key-env NAME)", file=sys.stderr)
    predictors = load_models(paths, threads, device, int8)
    serve_predictors(predictors, sock, max_batch, max_delay_ms, queue, api_key, limits)


def serve_predictors(predictors: dict, sock: socket.socket, max_batch: int = 32, max_delay_ms: float = 5.0,
                     queue: int = 256, api_key: str | None = None, limits: Limits | None = None) -> None:
    """Serve {name: predictor} (anything with the PredictorBase API) on a bound socket until
    SIGTERM or Ctrl-C, then drain and return."""
    workers = {name: ModelWorker(name, p, max_batch, max_delay_ms / 1000, queue) for name, p in predictors.items()}
    state = ServerState(workers, limits or Limits(), api_key)
    # The models and libraries just loaded are long-lived: moved out of the collector's sight, a
    # full collection no longer walks them (it paused a busy server for ~100 ms, the p99 latency).
    gc.freeze()
    config = uvicorn.Config(create_app(state), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=state.limits.timeout)
    DrainingServer(config, state).run(sockets=[sock])


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, with SIGTERM/SIGINT starting a drain instead of an immediate stop: the
    server keeps answering (503, readiness false) until no request is under way, at least
    DRAIN_GRACE seconds and at most the request timeout. A second Ctrl-C stops at once."""

    def __init__(self, config, state: ServerState):
        super().__init__(config)
        self.state = state
        self.drain_since = None

    def handle_exit(self, sig, frame):
        if self.drain_since is not None:
            if sig == signal.SIGINT:  # asked twice: stop now, without uvicorn's cancellation tracebacks
                print("stopped before the requests under way finished", file=sys.stderr, flush=True)
                os._exit(130)
            return
        self.state.draining = True
        self.drain_since = time.monotonic()
        print("draining: new requests get 503, requests under way finish (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    async def on_tick(self, counter):
        if self.drain_since is not None and not self.should_exit:
            waited = time.monotonic() - self.drain_since
            if (self.state.in_flight == 0 and waited >= DRAIN_GRACE) or waited > self.state.limits.timeout:
                self.should_exit = True
        return await super().on_tick(counter)

    async def startup(self, sockets=None):
        await super().startup(sockets)
        host, port = sockets[0].getsockname()[:2]
        url_host = f"[{host}]" if ":" in host else host
        print(f"serving {', '.join(self.state.workers)} on http://{url_host}:{port} (demo page at /, API at /v1/models)",
              flush=True)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port), or a one-line GroveError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise GroveError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = "; pick another with --port" if err.errno == errno.EADDRINUSE else ""
        raise GroveError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
