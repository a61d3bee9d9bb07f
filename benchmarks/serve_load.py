"""`grove serve` under load: dynamic batching against --max-batch 1, overload, and SIGTERM while busy.

    python benchmarks/serve_load.py                        # trains the three models, then measures
    python benchmarks/serve_load.py --image RUN --text RUN --audio RUN --work /tmp/grove-serve
    python benchmarks/serve_load.py --quick                # a smoke run of every part (c=1 and 32, short cells)
    python benchmarks/serve_load.py --only image --concurrency 32 --threads 1 --no-overload --no-sigterm
    python benchmarks/serve_load.py --only image --image-recipe digits-vit --concurrency 32

Everything is on 127.0.0.1 and bounded: every loop has a request count and a wall-clock cap, and
the script starts and stops its own `grove serve --port 0` subprocesses (it waits for their
"serving NAMES on http://127.0.0.1:PORT" line).

Models: an image (digits-cnn, or --image-recipe), a text (sentiment-demo-encoder) and an audio
(spoken-words-cnn) model, each a run directory or an export folder given with --image/--text/
--audio, else trained here with `grove train RECIPE run.dir=WORK/runs` (the image recipe in full;
the text and audio recipes cut to --train-steps optimiser steps, 150 by default: what is measured
is serving speed, which the weights do not change). A run is exported with `grove export RUN`
(RUN/export, ONNX) unless it already has one. --sources both (the default) serves each model
both ways, the run eagerly on PyTorch and the export on ONNX Runtime, and measures both.

The load generator costs as little CPU as it can, since it shares the server's cores: one asyncio
process (uvloop where installed), hand-written HTTP/1.1 request bytes on persistent keep-alive
connections (asyncio streams), the response read by its status line and Content-Length. Requests:
image, one PNG of a scikit-learn digit as the raw body (image/png); text, JSON {"inputs": [one
review]}; audio, a WAV of espeak-ng saying "yes" at the model's rate and clip length (a tone where
espeak-ng is missing), raw audio/wav. Every 200 must carry "results".

1. The grid. Four servers at once, serving all three models: {run, export} x {--max-batch 32
   (--max-delay-ms 5, the defaults), --max-batch 1}. For each model and concurrency (1, 8, 32, 64:
   N connections, each sending its next request as soon as the last is answered) every server in
   turn (the order alternates) gets a cell: --warmup seconds of load not counted, then a window
   that ends after --requests responses or --seconds, whichever comes first. req/s is responses
   in the window over its length; p50/p99 are of those responses' latencies (write to last byte).
   "batch" is the mean inputs per forward pass in the window (the server's grove_batch_size
   histogram); "srv ms/req" the server process's CPU time (user + system, all its threads) per
   response, "cli ms/req" the load generator's. batched/unbatched: req/s of --max-batch 32 over
   --max-batch 1, same source, same concurrency, measured within seconds of each other.
2. grove's HTTP path alone (with the image model; --no-diagnose skips it): two more pairs of
   servers, batched and unbatched, built as grove.serve.serve builds one (create_app, ModelWorker,
   DrainingServer) around a stub image model: "stub-null" neither decodes nor predicts (read
   returns the bytes), "stub-decode" decodes the PNG as an export does and predicts nothing. The
   same PNG requests at c=32 (or the top concurrency); and GET /healthz on one real server. The
   per-request server CPU of these against the real models' says where the CPU goes.
3. Overload: a fresh server with every model from its faster source and --queue 16; for each model
   an open-loop arrival rate of 4x its capacity (its best batched req/s in the grid) for
   --overload-seconds, on up to --overload-connections (512; an arrival that finds every
   connection waiting for an answer is counted "not sent"). Target: only 200 and 503 (each 503
   with Retry-After), no connection errors.
4. SIGTERM during load: a fresh server with the same models; 16 clients per model sending back to
   back; SIGTERM after --sigterm-after seconds; each client stops at its first 503. "Dropped" is a
   request without an HTTP response (reset or closed mid-request) or with a 5xx other than 503:
   target 0, and the server must exit with code 0.
5. The image model without HTTP (--no-diagnose skips it), in this process once the servers are
   gone: its predictors' `read` (PNG decode) and `predict_batch` at batch 1 and 32, timed
   directly; the run on torch at its default threads and at 1, the export on ONNX Runtime at the
   physical cores and at 1.

The header prints the CPU model, its bf16/AMX flags (benchmarks/machine.py), torch, onnxruntime
and uvicorn versions; each cell's "others" is how many cores processes other than the server
under test and the load generator kept busy (from /proc/stat, 10-ms ticks, so +-0.05 and shown
as 0 when below; the idle servers count there). --server-gc stats runs the servers through a
wrapper around grove.cli.main that reports their garbage collections at exit: a check of what
collections do to p99 (the server freezes what it loaded, so full collections stay short).
The issue's target is checked at the end: >= 5x the --max-batch 1 req/s at concurrency 32 for the
image model, with p99 <= 100 ms.

Run time on a 2-core AMD EPYC: 332 s from nothing (150 s of it training and exporting), about
185 s with --image/--text/--audio given; --quick (c=1 and 32, 0.25-s cells, 10 training steps)
120 s from nothing, about 40 s with the runs given (server start-ups, ~6 s each, dominate).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from machine import cpu_busy_seconds, train_run  # noqa: E402

HOST = "127.0.0.1"
MODELS = ("image", "text", "audio")
RECIPES = {"image": "digits-cnn", "text": "sentiment-demo-encoder", "audio": "spoken-words-cnn"}
TEXT = "a wonderful film, the acting was superb and the story moved me"
SERVING = re.compile(rb"serving (\S.*) on http://127\.0\.0\.1:(\d+)")
CLOCK = time.perf_counter


# -- the load generator --------------------------------------------------------------------------
class NoResponse(Exception):
    """The connection closed or reset before a whole response came back."""


class Conn:
    """One keep-alive HTTP/1.1 connection: write the request's bytes, read the status line, the
    headers up to the blank line and Content-Length bytes of body."""

    __slots__ = ("port", "reader", "writer")

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def send(self, request: bytes) -> tuple[int, bytes, bytes]:
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            low = head.lower()
            i = low.find(b"\r\ncontent-length:")
            if i < 0:
                raise NoResponse("a response without Content-Length")
            n = int(low[i + 17 : low.index(b"\r\n", i + 2)])
            body = await self.reader.readexactly(n) if n else b""
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as err:
            raise NoResponse(type(err).__name__) from None
        if b"\r\nconnection: close" in low:
            self.close()
        return int(head[9:12]), low, body

    @property
    def closed(self) -> bool:
        return self.writer is None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def request_bytes(port: int, method: str, path: str, body: bytes = b"", ctype: str | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    if method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def outcome(status: int, low: bytes, body: bytes, expect: bytes | None) -> str:
    if status == 200:
        return "200" if expect is None or expect in body else "200 without results"
    if status == 503:
        return "503" if b"\r\nretry-after:" in low else "503 without Retry-After"
    return str(status)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fetch(port: int, path: str) -> tuple[int, bytes]:
    conn = await Conn(port).open()
    try:
        status, _, body = await asyncio.wait_for(conn.send(request_bytes(port, "GET", path)), 10)
        return status, body
    finally:
        conn.close()


def batch_stats(metrics: bytes, model: str) -> tuple[float, float]:
    """(sum, count) of grove_batch_size for `model` in a /metrics page."""
    values = {}
    for kind in ("sum", "count"):
        m = re.search(rb'^grove_batch_size_%s\{model="%s"\} (\S+)$' % (kind.encode(), model.encode()), metrics, re.M)
        values[kind] = float(m.group(1)) if m else float("nan")
    return values["sum"], values["count"]


@dataclass
class Cell:
    model: str
    server: str
    concurrency: int
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    batch: float = float("nan")  # mean inputs per forward pass
    server_ms: float = float("nan")  # server CPU per response
    client_ms: float = float("nan")  # load generator CPU per response
    others: float = float("nan")  # cores others kept busy
    codes: dict = field(default_factory=dict)


async def closed_loop(port: int, pid: int, model: str | None, request: bytes, concurrency: int, warmup: float,
                      seconds: float, max_requests: int, expect: bytes | None) -> Cell:
    """`concurrency` connections sending back to back; counted: responses within the window after
    `warmup` s, until `max_requests` of them or `seconds`."""
    conns = await asyncio.gather(*(Conn(port).open() for _ in range(concurrency)))
    lat: list[float] = []
    codes: Counter = Counter()
    start = CLOCK()
    window = {"start": start + warmup, "end": None}
    deadline = start + warmup + seconds + 0.0
    hard_stop = deadline + 60  # a request may take long; no loop runs past this
    done = asyncio.Event()

    async def worker(conn: Conn):
        while not done.is_set() and CLOCK() < hard_stop:
            t0 = CLOCK()
            try:
                if conn.closed:
                    await conn.open()
                status, low, body = await conn.send(request)
                code = outcome(status, low, body, expect)
            except (NoResponse, OSError) as err:
                code = f"no response ({err})"
                conn.close()
            t1 = CLOCK()
            if done.is_set() or t1 < window["start"]:
                continue
            lat.append(t1 - t0)
            codes[code] += 1
            if len(lat) >= max_requests or t1 >= deadline:
                window["end"] = t1
                done.set()

    async def snapshots():
        await asyncio.sleep(max(0.0, window["start"] - CLOCK()))
        snap = {"cpu": proc_cpu(pid), "mine": time.process_time(), "all": cpu_busy_seconds(), "n": len(lat)}
        if model is not None:
            snap["batch"] = batch_stats((await fetch(port, "/metrics"))[1], model)
        await done.wait()
        end = {"cpu": proc_cpu(pid), "mine": time.process_time(), "all": cpu_busy_seconds()}
        if model is not None:
            end["batch"] = batch_stats((await fetch(port, "/metrics"))[1], model)
        return snap, end

    watcher = asyncio.ensure_future(snapshots())
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in conns)), hard_stop - CLOCK() + 5)
        snap, end = await asyncio.wait_for(watcher, 15)
    finally:
        watcher.cancel()
        for c in conns:
            c.close()
    cell = Cell(model or "-", "", concurrency, requests=len(lat), codes=dict(codes))
    if not lat or window["end"] is None:
        return cell
    cell.seconds = window["end"] - window["start"]
    cell.rps = len(lat) / cell.seconds
    cell.p50_ms, cell.p99_ms = (1e3 * float(np.percentile(lat, q)) for q in (50, 99))
    n = len(lat) - snap["n"]  # responses between the two snapshots (near enough the window's)
    wall = cell.seconds
    server, mine = end["cpu"] - snap["cpu"], end["mine"] - snap["mine"]
    cell.server_ms, cell.client_ms = 1e3 * server / max(n, 1), 1e3 * mine / max(n, 1)
    cell.others = (end["all"] - snap["all"] - server - mine) / wall
    if model is not None:
        (s0, c0), (s1, c1) = snap["batch"], end["batch"]
        cell.batch = (s1 - s0) / (c1 - c0) if c1 > c0 else float("nan")
    return cell


async def open_loop(port: int, pid: int, request: bytes, rate: float, seconds: float, max_conns: int,
                    expect: bytes) -> dict:
    """Arrivals at `rate` per second for `seconds`, each on an idle connection (a new one while
    fewer than `max_conns` are open; "not sent" when all are busy)."""
    idle: list[Conn] = []
    opened = 0
    codes: Counter = Counter()
    lat = {(code, new): [] for code in ("200", "503") for new in (False, True)}  # new: a connection's first
    tasks = set()
    not_sent = 0

    async def one(conn: Conn | None):
        nonlocal opened
        t0 = CLOCK()
        new = conn is None
        try:
            if conn is None:
                conn = Conn(port)
                try:
                    await conn.open()
                except OSError as err:
                    codes[f"connect error ({type(err).__name__})"] += 1
                    opened -= 1
                    return
            elif conn.closed:
                await conn.open()
            status, low, body = await conn.send(request)
            code = outcome(status, low, body, expect)
        except (NoResponse, OSError) as err:
            code = f"no response ({err})"
            conn.close()
        codes[code] += 1
        if (code, new) in lat:
            lat[code, new].append(CLOCK() - t0)
        idle.append(conn)

    start = CLOCK()
    cpu0, mine0 = proc_cpu(pid), time.process_time()
    sent = 0
    while (now := CLOCK()) < start + seconds:
        due = int((now - start) * rate) - sent - not_sent
        for _ in range(max(due, 0)):
            if idle:
                conn = idle.pop()
            elif opened < max_conns:
                conn, opened = None, opened + 1
            else:
                not_sent += 1
                continue
            sent += 1
            t = asyncio.ensure_future(one(conn))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.sleep(0.001)
    wall = CLOCK() - start
    if tasks:
        await asyncio.wait(list(tasks), timeout=60)
    answered = sum(codes.values())
    until_last = CLOCK() - start  # the arrivals' window and the time the last answers took
    server_ms = 1e3 * (proc_cpu(pid) - cpu0) / max(answered, 1)
    client_ms = 1e3 * (time.process_time() - mine0) / max(answered, 1)
    for c in idle:
        c.close()
    pct = lambda xs, q: 1e3 * float(np.percentile(xs, q)) if xs else float("nan")
    ok, refused = lat["200", False] + lat["200", True], lat["503", False] + lat["503", True]
    firsts = lat["200", True] + lat["503", True]
    return {"rate": rate, "sent": sent, "sent_per_s": sent / wall, "not_sent": not_sent, "connections": opened,
            "codes": dict(codes), "ok_per_s": codes["200"] / until_last, "p50_200_ms": pct(ok, 50),
            "p99_200_ms": pct(ok, 99), "p50_503_ms": pct(refused, 50), "unfinished": len(tasks),
            "p50_200_reused_ms": pct(lat["200", False], 50), "p99_200_reused_ms": pct(lat["200", False], 99),
            "p50_first_ms": pct(firsts, 50), "firsts": len(firsts),
            "server_ms": server_ms, "client_ms": client_ms}


async def sigterm_run(server: "Server", requests: dict, clients: int, after: float, expect: bytes, cap: float) -> dict:
    """`clients` connections per model sending back to back; SIGTERM after `after` s; each client
    stops at its first 503 (or after `cap` s)."""
    per_model = {m: Counter() for m in requests}
    before = {m: 0 for m in requests}  # 503s answered before SIGTERM (queue full)
    sent_at = {"t": None, "first_503": None}
    start = CLOCK()

    async def client(model: str):
        conn = Conn(server.port)
        try:
            await conn.open()
        except OSError as err:
            per_model[model][f"connect error ({type(err).__name__})"] += 1
            return
        try:
            while CLOCK() - start < cap:
                try:
                    if conn.closed:
                        await conn.open()
                    status, low, body = await conn.send(requests[model])
                    code = outcome(status, low, body, expect if model != "-" else None)
                except (NoResponse, OSError) as err:
                    code = f"no response ({err})"
                    conn.close()
                per_model[model][code] += 1
                if code.startswith("no response") and sent_at["t"] is not None:
                    break  # dropped; the server may be gone, so no retries
                if code.startswith("503"):
                    if sent_at["t"] is None:
                        before[model] += 1
                        continue
                    if sent_at["first_503"] is None:
                        sent_at["first_503"] = CLOCK()
                    break
        finally:
            conn.close()

    async def terminate():
        await asyncio.sleep(after)
        sent_at["t"] = CLOCK()
        server.proc.send_signal(signal.SIGTERM)

    killer = asyncio.ensure_future(terminate())
    await asyncio.gather(*(client(m) for m in requests for _ in range(clients)))
    await killer
    code = await asyncio.get_running_loop().run_in_executor(None, server.wait, 45)
    exit_s = CLOCK() - sent_at["t"]
    first = sent_at["first_503"] - sent_at["t"] if sent_at["first_503"] else float("nan")
    dropped = {m: sum(n for k, n in c.items() if k.startswith(("no response", "connect")) or
                      (k[:1] == "5" and not k.startswith("503"))) for m, c in per_model.items()}
    return {"codes": {m: dict(c) for m, c in per_model.items()}, "dropped": dropped, "queue_full_503": before,
            "exit_code": code, "exit_seconds": exit_s, "first_503_s": first, "stderr": server.stderr_tail()}


# -- servers -------------------------------------------------------------------------------------
class Server:
    """`grove serve SPECS --port 0 OPTIONS` (or, with stub, this script's stub server) in a subprocess."""

    def __init__(self, label: str, specs: list[str], options: list[str], work: Path, env: dict, stub: str | None = None,
                 gc_mode: str | None = None):
        self.label = label
        self.log = work / f"server-{re.sub(r'[^A-Za-z0-9]+', '-', label)}.log"
        if stub is not None:
            cmd = [sys.executable, __file__, "--stub-server", stub, *options]
        elif gc_mode:
            cmd = [sys.executable, __file__, "--gc-wrapper", gc_mode, "serve", *specs, "--host", HOST, "--port", "0",
                   *options]
        else:
            cmd = [sys.executable, "-m", "grove", "serve", *specs, "--host", HOST, "--port", "0", *options]
        self.cmd = cmd
        self._err = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, env={**os.environ, **env})
        self.port = None
        self.started = CLOCK()
        self.ready_s = float("nan")

    def wait_ready(self, timeout: float = 120) -> None:
        buf = b""
        end = CLOCK() + timeout
        while self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.label} exited {self.proc.returncode}: {self.stderr_tail()}")
            left = end - CLOCK()
            if left <= 0:
                self.kill()
                raise RuntimeError(f"server {self.label} printed no 'serving' line in {timeout:.0f} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                buf += chunk
                m = SERVING.search(buf)
                if m:
                    self.port = int(m.group(2))
        self.ready_s = CLOCK() - self.started
        # nothing more is expected on stdout, but a full pipe would block the server: keep reading
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _drain_stdout(self) -> None:
        try:
            while os.read(self.proc.stdout.fileno(), 65536):
                pass
        except OSError:
            pass

    def stderr_tail(self, lines: int = 3) -> str:
        self._err.flush()
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, then the exit code (None: it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.kill()
        self._err.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def stop_all(servers: dict, timeout: float = 40) -> dict:
    """SIGTERM every server at once (each drains for at least half a second), then their exit codes;
    `servers` is emptied."""
    for srv in servers.values():
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
    codes = {k: srv.stop(timeout) for k, srv in servers.items()}
    servers.clear()
    return codes


# -- models and inputs ---------------------------------------------------------------------------
def is_export(path: Path) -> bool:
    return (path / "export.json").is_file()


def export(run: Path, work: Path) -> Path:
    out = run / "export"
    if is_export(out):
        return out
    log = work / f"export-{run.parent.name}-{run.name}.log"
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "grove", "export", str(run)], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not is_export(out):
        raise SystemExit(f"`grove export {run}` exited {done.returncode}: see {log}")
    return out


def png_digit(size: int, channels: int) -> bytes:
    from PIL import Image

    try:
        from sklearn.datasets import load_digits

        pixels = (load_digits().images[7] * (255 / 16)).astype(np.uint8)  # a bundled 8x8 "7"
    except ImportError:
        pixels = (np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)
    image = Image.fromarray(pixels, "L")
    if image.size != (size, size):
        image = image.resize((size, size))
    if channels == 3:
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def wav_clip(sample_rate: int, seconds: float | None, work: Path) -> tuple[bytes, str]:
    """A WAV of espeak-ng saying "yes" at `sample_rate`, fitted to `seconds`; a tone without espeak-ng."""
    length = round((seconds or 1.0) * sample_rate)
    what = 'espeak-ng "yes"'
    try:
        raw = work / "yes.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), "yes"], check=True, capture_output=True, timeout=30)
        with wave.open(str(raw)) as f:
            rate, data = f.getframerate(), np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
        x = np.interp(np.arange(0, len(data) * sample_rate / rate) * rate / sample_rate, np.arange(len(data)), data)
    except (OSError, subprocess.SubprocessError):
        what = "a 440 Hz tone (no espeak-ng)"
        x = 8000 * np.sin(2 * np.pi * 440 * np.arange(length) / sample_rate)
    clip = np.zeros(length)
    x = x[:length]
    clip[(length - len(x)) // 2 : (length - len(x)) // 2 + len(x)] = x
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(sample_rate)
        f.writeframes(clip.astype(np.int16).tobytes())
    return out.getvalue(), what


def bodies(info: dict, work: Path) -> dict:
    """model -> (body, content type, what it is), from GET /v1/models."""
    out = {}
    for m in info["models"]:
        spec = m["input"]
        if spec["kind"] == "image":
            out[m["name"]] = (png_digit(spec["size"], spec["channels"]), "image/png",
                              f"PNG {spec['size']}x{spec['size']}x{spec['channels']}")
        elif spec["kind"] == "text":
            out[m["name"]] = (json.dumps({"inputs": [TEXT]}).encode(), "application/json",
                              f'JSON {{"inputs": [{len(TEXT)} chars]}}')
        elif spec["kind"] == "audio":
            body, what = wav_clip(spec["sample_rate"], spec["clip_seconds"], work)
            out[m["name"]] = (body, "audio/wav", f"WAV {what}, {spec['sample_rate']} Hz, {spec['clip_seconds']} s")
    for name, (body, ctype, what) in out.items():
        out[name] = (body, ctype, f"{what}, {len(body):,} bytes")
    return out


def versions() -> str:
    parts = []
    for pkg in ("torch", "onnxruntime", "fastapi", "uvicorn", "uvloop", "httptools"):
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


def cpu_line() -> str:
    from machine import bf16_line, cpu_info

    model, flags = cpu_info()
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines():
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    except OSError:
        pass
    amx = [f for f in sorted(flags) if f.startswith("amx")]
    fam = f"family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}; " if fields else ""
    isa = "avx2" if "avx2" in flags else "no avx2"
    return (f"{model} ({fam}{isa}; {bf16_line()}; amx: {', '.join(amx) or 'none'}), "
            f"{os.cpu_count()} logical CPUs, {len(os.sched_getaffinity(0))} usable")


# -- a stub model behind grove's own HTTP path -----------------------------------------------------
class StubPredictor:
    """An 8x8 grey image classifier that costs nothing: "null" does not even decode the PNG
    (read returns the bytes), "decode" decodes it as an export does (grove.runtime.inputs.read_image)
    and predicts nothing. What grove's HTTP path, batching and (for "decode") decoding cost alone."""

    task, modality, source, recipe = "classification", "image", "export", "stub"

    def __init__(self, kind: str):
        self.kind = kind
        self.classes = [str(i) for i in range(10)]

    def input_info(self) -> dict:
        return {"kind": "image", "size": 8, "channels": 1}

    def read(self, raw):
        if self.kind == "null":
            return raw
        from grove.runtime.inputs import read_image

        return read_image(raw, 8, 1)[None]

    def predict_batch(self, items: list, top: int, beam_width: int) -> list:
        return [[(c, 0.1) for c in self.classes[:top]] for _ in items]


def stub_server(kind: str, max_batch: int, max_delay_ms: float) -> None:
    """grove's server (grove.serve.serve_predictors) for one StubPredictor."""
    from grove.serve import bind, serve_predictors

    serve_predictors({"image": StubPredictor(kind)}, bind(HOST, 0), max_batch, max_delay_ms)


def gc_wrapper(mode: str, argv: list[str]) -> int:
    """`grove serve ARGV` (grove.cli.main) with its garbage collector watched: at exit, stderr gets
    one line "gc: ..." with the collections of each generation made while serving and the longest
    pause."""
    import atexit
    import gc

    import uvicorn

    stats = {g: [0, 0.0, 0.0] for g in range(3)}
    began = [0.0, False]

    def watch(phase, info):
        if phase == "start":
            began[0] = time.perf_counter()
        elif began[1]:
            pause = time.perf_counter() - began[0]
            row = stats[info["generation"]]
            row[0], row[1], row[2] = row[0] + 1, row[1] + pause, max(row[2], pause)

    original = uvicorn.Server.startup

    async def startup(self, sockets=None):
        began[1] = True
        return await original(self, sockets)

    def report():
        rows = ", ".join(f"gen{g} {n} ({1e3 * total:.0f} ms, longest {1e3 * longest:.1f} ms)"
                         for g, (n, total, longest) in stats.items())
        print(f"gc ({mode}): {rows}; {gc.get_freeze_count()} objects frozen, {len(gc.get_objects())} tracked",
              file=sys.stderr, flush=True)

    gc.callbacks.append(watch)
    uvicorn.Server.startup = startup
    atexit.register(report)
    from grove.cli import main as grove_main

    return grove_main(argv)


# -- diagnosis -----------------------------------------------------------------------------------
def time_calls(fn, seconds: float, at_least: int = 5) -> float:
    """Median seconds of one fn() over `seconds` (after 3 untimed calls)."""
    for _ in range(3):
        fn()
    times, end = [], CLOCK() + seconds
    while len(times) < at_least or CLOCK() < end:
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
        if len(times) > 100_000:
            break
    return statistics.median(times)


def diagnose(paths: dict, png: bytes, seconds: float) -> list[dict]:
    """read() and predict_batch at 1 and 32 for the image model, timed in this process."""
    import grove
    from grove.runtime.session import physical_cores

    rows = []
    configs = []
    if "export" in paths:
        configs += [("export", physical_cores()), ("export", 1)]
    if "run" in paths:
        configs += [("run", None), ("run", 1)]
    for source, threads in configs:
        if source == "run":
            import torch

            p = grove.load(paths["run"], device="cpu", threads=threads)  # None: torch's default first
            shown = torch.get_num_threads()
        else:
            p = grove.load(paths["export"], threads=threads)
            shown = threads
        item = p.read(png)
        read = time_calls(lambda: p.read(png), seconds)
        b1 = time_calls(lambda: p.predict_batch([item], 5, 8), seconds)
        b32 = time_calls(lambda: p.predict_batch([item] * 32, 5, 8), seconds)
        rows.append({"source": source, "threads": shown, "read_ms": 1e3 * read, "b1_ms": 1e3 * b1,
                     "b32_ms": 1e3 * b32, "b32_per_item_ms": 1e3 * b32 / 32, "model_ratio": 32 * b1 / b32})
    return rows


# -- tables --------------------------------------------------------------------------------------
def f(x: float, digits: int = 1) -> str:
    return "-" if x != x else f"{x:,.{digits}f}"


def codes_text(codes: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=lambda kv: -kv[1])) or "none"


def grid_table(cells: list[Cell], model: str, sources: list[str]) -> list[str]:
    lines = ["| c | source | batched req/s | p50 ms | p99 ms | batch | srv ms/req | unbatched req/s | p50 ms | "
             "p99 ms | srv ms/req | **batched / unbatched** | cli ms/req (b/u) | others (b/u) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(c.server, c.concurrency): c for c in cells if c.model == model}
    notes = []
    for conc in sorted({c.concurrency for c in cells if c.model == model}):
        for source in sources:
            b, u = by.get((f"{source} b32", conc)), by.get((f"{source} b1", conc))
            if b is None or u is None:
                continue
            ratio = b.rps / u.rps if u.rps else float("nan")
            notes += [f"c={conc} {cell.server}: {v} x {k}"
                      for cell in (b, u) for k, v in cell.codes.items() if k != "200"]
            lines.append(
                f"| {conc} | {source} | {f(b.rps, 0)} | {f(b.p50_ms)} | {f(b.p99_ms)} | {f(b.batch)} | "
                f"{f(b.server_ms, 2)} | {f(u.rps, 0)} | {f(u.p50_ms)} | {f(u.p99_ms)} | {f(u.server_ms, 2)} | "
                f"**{f(ratio, 2)}x** | {f(b.client_ms, 2)} / {f(u.client_ms, 2)} | {f(max(b.others, 0), 2)} / "
                f"{f(max(u.others, 0), 2)} |"
            )
    return lines + ([f"responses other than 200 in the windows: {'; '.join(notes)}"] if notes else [])


def cpu_breakdown(cells: list[Cell], healthz: Cell, sources: list[str], conc: int) -> str:
    def cell(server):
        return next((c for c in cells if c.model == "image" and c.server == server and c.concurrency == conc), None)

    parts = [f"GET /healthz {f(healthz.server_ms, 2)}"]
    rows = [("predict, no decode, no model (stub-null)", "stub-null"), ("+ PNG decode (stub-decode)", "stub-decode"),
            *((f"real model ({s})", s) for s in sources)]
    for label, src in rows:
        b, u = cell(f"{src} b32"), cell(f"{src} b1")
        if b and u:
            parts.append(f"{label} {f(b.server_ms, 2)} / {f(u.server_ms, 2)}")
    return f"server CPU ms per image request at c={conc}, batched / unbatched: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for m in MODELS:
        parser.add_argument(f"--{m}", type=Path, default=None, help=f"a {m} run directory or export folder")
    parser.add_argument("--image-recipe", default=RECIPES["image"], help="the image recipe to train (no --image)")
    parser.add_argument("--image-override", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for training the image recipe (repeatable), e.g. model.name=resnet18")
    parser.add_argument("--train-steps", type=int, default=150, help="steps for the text and audio recipes")
    parser.add_argument("--work", type=Path, default=None, help="runs, logs (default: a temp folder, removed)")
    parser.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS), help="a subset of the models")
    parser.add_argument("--sources", choices=("both", "run", "export"), default="both")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of load before each cell's window")
    parser.add_argument("--seconds", type=float, default=2.0, help="a cell's window at most")
    parser.add_argument("--requests", type=int, default=4000, help="responses in a cell's window at most")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="--threads for every server (default: theirs)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the servers (repeatable), e.g. OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--no-overload", action="store_true")
    parser.add_argument("--overload-seconds", type=float, default=3.0)
    parser.add_argument("--overload-connections", type=int, default=512, help="connections the overload may open")
    parser.add_argument("--no-sigterm", action="store_true")
    parser.add_argument("--sigterm-after", type=float, default=1.5)
    parser.add_argument("--no-diagnose", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny training, short cells")
    parser.add_argument("--json", type=Path, default=None, help="save every figure here")
    parser.add_argument("--server-gc", choices=("stats",), default=None,
                        help="run the servers under a wrapper that reports their garbage collections")
    parser.add_argument("--stub-server", choices=("null", "decode"), default=None, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--gc-wrapper"]:
        raise SystemExit(gc_wrapper(sys.argv[2], sys.argv[3:]))
    args = parser.parse_args()
    if args.stub_server:
        return stub_server(args.stub_server, args.max_batch, args.max_delay_ms)
    if args.quick:
        args.train_steps = min(args.train_steps, 10)
        if "--concurrency" not in sys.argv:
            args.concurrency = [1, 32]
        args.warmup, args.seconds, args.requests = 0.1, 0.25, 300
        args.overload_seconds, args.sigterm_after = 0.5, 0.4
    started = CLOCK()
    try:
        import uvloop

        run_async, loop_name = uvloop.run, "uvloop"
    except ImportError:
        run_async, loop_name = asyncio.run, "asyncio"

    work = args.work or Path(tempfile.mkdtemp(prefix="grove-serve-load-"))
    work.mkdir(parents=True, exist_ok=True)
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    print(f"machine: {cpu_line()}")
    print(f"versions: {versions()}, Python {sys.version.split()[0]}; load generator on {loop_name}")
    print(f"servers: --max-batch {args.max_batch} --max-delay-ms {args.max_delay_ms:g} against --max-batch 1"
          + (f", --threads {args.threads}" if args.threads else ", their default threads")
          + (f", env {server_env}" if server_env else "")
          + f"; cells: {args.warmup:g} s warm-up, then {args.requests} responses or {args.seconds:g} s\n")

    paths = prepare_models(args, work)
    sources = [s for s in ("run", "export") if args.sources in ("both", s) and all(s in p for p in paths.values())]
    if not sources:
        raise SystemExit(f"no source serves every model: {paths}")
    for m, p in paths.items():
        print(f"{m}: " + ", ".join(f"{k} {v}" for k, v in p.items()))
    if args.work is not None and any(getattr(args, m) is None for m in paths):
        given = " ".join(f"--{m} {p.get('run', p['export'])}" for m, p in paths.items())
        print(f"(to measure these again without training: {given})")
    target_c = 32 if 32 in args.concurrency else max(args.concurrency)
    doc = {"machine": cpu_line(), "versions": versions(), "date": date.today().isoformat(),
           "command": " ".join(sys.argv), "paths": {m: {k: str(v) for k, v in p.items()} for m, p in paths.items()}}
    common = ["--max-delay-ms", str(args.max_delay_ms)]
    threads = ["--threads", str(args.threads)] if args.threads else []
    servers: dict[str, Server] = {}
    cells: list[Cell] = []
    try:
        # every server of the grid and of the stub ceiling at once (their start-ups overlap)
        for s in sources:
            specs = [f"{m}={paths[m][s]}" for m in paths]
            for key, mb in (("b32", args.max_batch), ("b1", 1)):
                servers[f"{s} {key}"] = Server(f"{s} {key}", specs, ["--max-batch", str(mb), *common, *threads],
                                               work, server_env, gc_mode=args.server_gc)
        if "image" in paths and not args.no_diagnose:
            for kind in ("null", "decode"):
                for key, mb in (("b32", args.max_batch), ("b1", 1)):
                    servers[f"stub-{kind} {key}"] = Server(f"stub-{kind} {key}", [], ["--max-batch", str(mb), *common],
                                                           work, server_env, stub=kind)
        for srv in servers.values():
            srv.wait_ready()
        print("servers ready in " + ", ".join(f"{k} {v.ready_s:.1f} s" for k, v in servers.items()))
        first = servers[f"{sources[0]} b32"]
        info = json.loads(run_async(fetch(first.port, "/v1/models"))[1])
        payloads = bodies(info, work)
        for m, (_, _, what) in payloads.items():
            print(f"  {m} requests: {what}")
        print()

        # 1. the grid, then grove's HTTP path with stub models (image requests)
        flip = False
        for m in paths:
            body, ctype, _ = payloads[m]
            for conc in args.concurrency:
                for key in [f"{s} {b}" for s in sources for b in (("b1", "b32") if flip else ("b32", "b1"))]:
                    cells.append(run_cell(run_async, servers[key], key, m, body, ctype, conc, args))
                flip = not flip
        stubs = [k for k in servers if k.startswith("stub")]
        for key in stubs[::-1] if flip else stubs:
            cells.append(run_cell(run_async, servers[key], key, "image", *payloads["image"][:2], target_c, args))
        healthz = run_async(closed_loop(first.port, first.proc.pid, None, request_bytes(first.port, "GET", "/healthz"),
                                        target_c, args.warmup, args.seconds, args.requests, None))
        doc["grid"] = [asdict(c) for c in cells]
        doc["healthz"] = asdict(healthz)
        for m in paths:
            print(f"\n{m} ({payloads[m][2]}): --max-batch {args.max_batch} (batched) against --max-batch 1 (unbatched)")
            print("\n".join(grid_table(cells, m, sources)))
        if stubs:
            print(f"\ngrove's HTTP path with stub image models (PNG requests, c={target_c}): stub-null neither decodes "
                  "nor predicts, stub-decode decodes the PNG (as an export does) and predicts nothing")
            print("\n".join(grid_table([c for c in cells if c.concurrency == target_c and c.model == "image"], "image",
                                       ["stub-null", "stub-decode", *sources])))
        if stubs:
            print(cpu_breakdown(cells, healthz, sources, target_c))
        print(f"\nGET /healthz ({first.label} server, c={target_c}): {f(healthz.rps, 0)} req/s, "
              f"p50 {f(healthz.p50_ms)} ms, "
              f"p99 {f(healthz.p99_ms)} ms, server {f(healthz.server_ms, 3)} ms CPU/req, "
              f"load generator {f(healthz.client_ms, 3)} ms CPU/req, others {f(max(healthz.others, 0), 2)} cores")

        # the faster source per model: the best batched req/s
        best, capacity = {}, {}
        for m in paths:
            rates = {s: max((c.rps for c in cells if c.model == m and c.server == f"{s} b32"), default=0)
                     for s in sources}
            best[m] = max(rates, key=rates.get)
            capacity[m] = rates[best[m]]
        print("\nfaster source (best batched req/s): "
              + ", ".join(f"{m} {best[m]} ({capacity[m]:,.0f} req/s)" for m in paths))
        logs = {k: srv.log for k, srv in servers.items()}
        exits = stop_all(servers)
        if args.server_gc:
            for k, log in logs.items():
                lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("gc (")]
                if lines and not k.startswith("stub"):
                    print(f"{k} server's {lines[-1]}")
        print("exit codes of the grid's servers after SIGTERM: " + ", ".join(f"{k} {v}" for k, v in exits.items()))
        doc.update(best=best, capacity=capacity, grid_exit_codes=exits)

        # 2 and 3 start together: the SIGTERM server waits while the overload runs
        specs = [f"{m}={paths[m][best[m]]}" for m in paths]
        if not args.no_overload:
            servers["overload"] = Server("overload", specs, ["--queue", "16", *common, *threads], work, server_env,
                                         gc_mode=args.server_gc)
        if not args.no_sigterm:
            servers["sigterm"] = Server("sigterm", specs, [*common, *threads], work, server_env, gc_mode=args.server_gc)
        for srv in servers.values():
            srv.wait_ready()
        if not args.no_overload:
            doc["overload"], doc["overload_exit_code"] = overload(run_async, servers.pop("overload"), paths, payloads,
                                                                  capacity, specs, args)
        if not args.no_sigterm:
            doc["sigterm"] = sigterm(run_async, servers.pop("sigterm"), paths, payloads, specs, args)
    finally:
        stop_all(servers, 10)

    # 4. where the image model's time goes
    if "image" in paths and not args.no_diagnose:
        rows = diagnose(paths["image"], payloads["image"][0], 0.2 if args.quick else 1.0)
        doc["diagnosis"] = rows
        print("\nthe image model in this process, no HTTP: read (PNG decode) and predict_batch at batch 1 and 32, "
              "medians")
        print("| source | threads | read ms | batch 1 ms | batch 32 ms | per item at 32 ms | items/s at 32 / at 1 |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['source']} | {r['threads']} | {r['read_ms']:.3f} | {r['b1_ms']:.3f} | {r['b32_ms']:.3f} | "
                  f"{r['b32_per_item_ms']:.3f} | {r['model_ratio']:.1f}x |")
    verdicts = []
    if "image" in paths:
        for s in sources:
            b, u = (next(c for c in cells
                         if c.model == "image" and c.server == f"{s} {k}" and c.concurrency == target_c)
                    for k in ("b32", "b1"))
            ratio = b.rps / u.rps if u.rps else float("nan")
            ok = ratio >= 5 and b.p99_ms <= 100
            verdicts.append(f"image, {s}, c={target_c}: batched {b.rps:,.0f} req/s / unbatched {u.rps:,.0f} = "
                            f"{ratio:.2f}x (target >= 5x), batched p99 {b.p99_ms:.1f} ms (target <= 100): "
                            f"{'MET' if ok else 'NOT MET'}; "
                            f"server CPU {b.server_ms:.2f} ms/req batched, {u.server_ms:.2f} unbatched; "
                            f"others {max(b.others, 0):.2f} / {max(u.others, 0):.2f} cores")
        print("\ntarget: " + "\ntarget: ".join(verdicts))
    doc["verdicts"] = verdicts
    total = CLOCK() - started
    doc["seconds"] = total
    print(f"\nwhole run {total:.0f} s ({date.today().isoformat()})")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def prepare_models(args, work: Path) -> dict[str, dict[str, Path]]:
    """model -> {"run": RUN, "export": RUN/export} (or only "export" for an export folder given)."""
    paths = {}
    for m in args.only:
        given = getattr(args, m)
        if given is None:
            t = CLOCK()
            recipe = args.image_recipe if m == "image" else RECIPES[m]
            steps = (10 if args.quick else None) if m == "image" else args.train_steps
            overrides = [*(args.image_override if m == "image" else []), *([f"train.max_steps={steps}"] if steps else [])]
            given = train_run(recipe, work, overrides)
            print(f"  {m}: trained {recipe}" + (f" for {steps} steps" if steps else " (the whole recipe)")
                  + f" in {CLOCK() - t:.0f} s -> {given}", file=sys.stderr)
        if is_export(given):
            paths[m] = {"export": given}
        else:
            t = CLOCK()
            paths[m] = {"run": given, "export": export(given, work)}
            print(f"  {m}: export {paths[m]['export']} ({CLOCK() - t:.0f} s)", file=sys.stderr)
    return paths


def run_cell(run_async, srv: Server, key: str, model: str, body: bytes, ctype: str, conc: int, args) -> Cell:
    req = request_bytes(srv.port, "POST", f"/v1/models/{model}/predict", body, ctype)
    cell = run_async(closed_loop(srv.port, srv.proc.pid, model, req, conc, args.warmup, args.seconds, args.requests,
                                 b'"results"'))
    cell.server = key  # "b32": batched, at --max-batch
    print(f"  {model} c={conc} {key}: {f(cell.rps, 0)} req/s, p50 {f(cell.p50_ms)} ms, p99 {f(cell.p99_ms)} ms, "
          f"batch {f(cell.batch)}, srv {f(cell.server_ms, 2)} ms/req, others {f(max(cell.others, 0), 2)}, "
          f"{codes_text(cell.codes)}", file=sys.stderr)
    return cell


def overload(run_async, srv: Server, paths: dict, payloads: dict, capacity: dict, specs: list[str], args):
    print(f"\noverload: {' '.join(specs)} --queue 16; open-loop arrivals at 4x capacity (the best batched req/s "
          f"above) for {args.overload_seconds:g} s, on up to {args.overload_connections} connections")
    print("(200/s: 200s over the time from the first arrival to the last answer; not sent: arrivals that found every "
          "connection waiting for an answer; reused: 200s on a connection's second or later request; first: the "
          "answers to each connection's first request)")
    print("| model | capacity req/s | arrivals/s asked | sent/s | 200/s | p50 / p99 ms of 200s | reused p50 / p99 | "
          "first p50 ms | p50 ms of 503s | not sent | connections | srv / cli ms/resp | responses by status |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    results = {}
    for m in paths:
        body, ctype, _ = payloads[m]
        req = request_bytes(srv.port, "POST", f"/v1/models/{m}/predict", body, ctype)
        r = run_async(open_loop(srv.port, srv.proc.pid, req, 4 * capacity[m], args.overload_seconds,
                                args.overload_connections, b'"results"'))
        results[m] = r
        bad = any(k not in ("200", "503") for k in r["codes"])
        print(f"| {m} | {capacity[m]:,.0f} | {r['rate']:,.0f} | {r['sent_per_s']:,.0f} | {r['ok_per_s']:,.0f} | "
              f"{f(r['p50_200_ms'])} / {f(r['p99_200_ms'])} | {f(r['p50_200_reused_ms'])} / "
              f"{f(r['p99_200_reused_ms'])} | {f(r['p50_first_ms'])} | {f(r['p50_503_ms'])} | {r['not_sent']:,} | "
              f"{r['connections']} | {f(r['server_ms'], 2)} / {f(r['client_ms'], 2)} | "
              f"{codes_text(r['codes'])}{' **NOT ONLY 200/503**' if bad else ''} |")
    code = srv.stop()
    print(f"overload server's exit code after SIGTERM: {code}")
    return results, code


def sigterm(run_async, srv: Server, paths: dict, payloads: dict, specs: list[str], args) -> dict:
    reqs = {m: request_bytes(srv.port, "POST", f"/v1/models/{m}/predict", *payloads[m][:2]) for m in paths}
    r = run_async(sigterm_run(srv, reqs, 16, args.sigterm_after, b'"results"', 60))
    srv._err.close()
    print(f"\nSIGTERM during load: {' '.join(specs)}; 16 clients per model sending back to back, SIGTERM after "
          f"{args.sigterm_after:g} s, each client stopping at its first 503")
    print("| model | responses by status | dropped | 503 before SIGTERM |")
    print("|---|---|---:|---:|")
    for m in paths:
        print(f"| {m} | {codes_text(r['codes'][m])} | {r['dropped'][m]} | {r['queue_full_503'][m]} |")
    print(f"server exit code {r['exit_code']} ({'ok' if r['exit_code'] == 0 else 'NOT 0'}), "
          f"{f(r['exit_seconds'], 2)} s "
          f"after SIGTERM (first 503 {f(r['first_503_s'], 3)} s after it); its stderr: {r['stderr']}")
    return r


if __name__ == "__main__":
    main()
