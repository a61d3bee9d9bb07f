"""Writing files so that a killed process never leaves one that looks complete.

Everything is written under a temporary name beside its destination (so the final `os.replace` is
a rename within one file system) and renamed into place only once complete. A leaf module: it
imports nothing of grove but errors, so the run directory and the data sets can both use it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

_STAGING = ".staging"


@contextmanager
def atomic_file(path: Path | str) -> Iterator[IO[bytes]]:
    """A binary file to write `path` through: renamed over `path` (flushed and synced) when the
    block ends normally, deleted when it raises. Created with the usual permissions (umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path | str, data: bytes | str) -> None:
    """`path` holds `data` (str as UTF-8), or is left as it was."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


@contextmanager
def staging_dir(parent: Path | str) -> Iterator[Path]:
    """A fresh empty folder inside `parent`, removed when the block ends however it ends.

    Whatever is built there is moved into `parent` by the caller (`os.replace`, atomic on one file
    system). The folder's name carries the host and process id, so processes extracting at once do
    not collide, and folders left by killed processes on this host are removed first.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    _remove_stale(parent, host)
    path = parent / f"{_STAGING}-{host}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale(parent: Path, host: str) -> None:
    prefix = f"{_STAGING}-{host}-"
    for leftover in parent.glob(f"{prefix}*"):
        pid, _, token = leftover.name[len(prefix) :].partition("-")
        if pid.isdigit() and len(token) == 8 and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
