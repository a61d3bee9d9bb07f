"""Files grove fetches: checksummed, written atomically, and with a clear message when offline.

Offline machines are the normal case, so a failed download says where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from grove.errors import GroveError

_TIMEOUT_S = 30


def data_dir() -> Path:
    """Where downloaded data sets live: $GROVE_DATA_DIR, else ~/.cache/grove/data."""
    env = os.environ.get("GROVE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "grove" / "data"


def fetch(
    url: str,
    dest: Path,
    md5: str | None = None,
    sha256: str | None = None,
    *,
    what: str | None = None,
) -> Path:
    """`dest`, downloaded from `url` first if it is not there; checked against the given digests."""
    dest = Path(dest).expanduser()
    what = what or dest.name
    expected = {name: digest for name, digest in (("md5", md5), ("sha256", sha256)) if digest}
    if dest.exists():
        bad = _mismatch(dest, expected)
        if bad:
            raise GroveError(
                f"{dest} has the wrong {bad}; it is corrupt or a different file: delete it and run again"
            )
        return dest

    tmp = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url} to {dest}", file=sys.stderr)
        # The temp file sits beside dest so that os.replace is a rename within one file system.
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, tempfile.NamedTemporaryFile(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False
        ) as out:
            tmp = Path(out.name)
            while chunk := response.read(1 << 20):
                out.write(chunk)
        bad = _mismatch(tmp, expected)
        if bad:
            raise GroveError(
                f"the download of {url} has the wrong {bad} (corrupt or changed upstream); "
                f"download it by hand and put it at {dest}"
            )
        os.replace(tmp, dest)
        tmp = None
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        raise GroveError(
            f"{what} is not at {dest} and could not be downloaded ({_one_line(reason)}); "
            f"download {url} and put it at {dest}"
        ) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return dest


def _mismatch(path: Path, expected: dict[str, str]) -> str | None:
    """The name of the first digest of `path` that differs from the expected one, else None."""
    if not expected:
        return None
    hashes = {name: hashlib.new(name) for name in expected}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashes.values():
                h.update(chunk)
    for name, digest in expected.items():
        if hashes[name].hexdigest() != digest.lower():
            return f"{name} checksum"
    return None


def _one_line(reason) -> str:
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return " ".join(text.split()) or type(reason).__name__
