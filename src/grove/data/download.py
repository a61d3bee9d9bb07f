"""Files grove fetches and unpacks: checksummed, all or nothing, and with a clear message when offline.

Offline machines are the normal case, so a failed download says where to put the file by hand.
Downloads and extractions go through `grove.files`: nothing appears under its final name before
it is complete, so an interrupted run leaves nothing that a later run would trust.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

from grove.errors import GroveError
from grove.files import atomic_file, staging_dir

_TIMEOUT_S = 30
COMPLETE = ".grove-complete"  # the marker inside a folder that extract_archive finished


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
    expected = {name: digest.lower() for name, digest in (("md5", md5), ("sha256", sha256)) if digest}
    if dest.exists():
        bad = _mismatch(_digests(dest, expected), expected)
        if bad:
            raise GroveError(
                f"{dest} has the wrong {bad}; it is corrupt or a different file: delete it and run again"
            )
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url} to {dest}", file=sys.stderr)
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, atomic_file(dest) as out:
            hashes = {name: hashlib.new(name) for name in expected}
            while chunk := response.read(1 << 20):
                out.write(chunk)
                for h in hashes.values():
                    h.update(chunk)
            bad = _mismatch(hashes, expected)
            if bad:  # raised inside the block: the partial download is deleted, dest never appears
                raise GroveError(
                    f"the download of {url} has the wrong {bad} (corrupt or changed upstream); "
                    f"download it by hand and put it at {dest}"
                )
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        raise GroveError(
            f"{what} is not at {dest} and could not be downloaded ({_one_line(reason)}); "
            f"download {url} and put it at {dest}"
        ) from None
    return dest


def extract_archive(archive: Path, dest: Path, member: str | None = None) -> Path:
    """The folder `dest` holding `archive` (.tar.gz, .tar, .zip), or its folder `member`.

    Extracted into a staging folder beside dest and renamed into place with a marker file once
    complete, so an interrupted extraction leaves no `dest` and is redone on the next run; a
    `dest` without the marker (left by hand or by an older grove) is replaced.
    """
    dest = Path(dest)
    if (dest / COMPLETE).exists():
        return dest
    print(f"extracting {archive} to {dest}", file=sys.stderr, flush=True)
    with staging_dir(dest.parent) as staging:
        _unpack(archive, staging, None)
        source = staging / member if member else staging
        if not source.is_dir():
            raise GroveError(
                f"{archive} has no folder {member}: it is not the expected archive; delete it and run again"
            )
        (source / COMPLETE).touch()
        if dest.exists():
            _remove(dest)
        os.replace(source, dest)
    return dest


def extract_files(archive: Path, folder: Path, members: dict[str, str]) -> None:
    """folder/<name> for each {member of the archive: name}, all extracted before any is renamed
    into place, so a file in `folder` is always whole. Files already in `folder` are kept."""
    folder = Path(folder)
    missing = {member: name for member, name in members.items() if not (folder / name).exists()}
    if not missing:
        return
    print(f"extracting {', '.join(missing.values())} from {archive} to {folder}", file=sys.stderr, flush=True)
    with staging_dir(folder) as staging:
        _unpack(archive, staging, list(missing))
        for member, name in missing.items():
            os.replace(staging / member, folder / name)


def _unpack(archive: Path, into: Path, members: list[str] | None) -> None:
    """Every member of `archive` (or just `members`) under `into`; one-line GroveError if it is damaged."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:  # ZipFile strips absolute paths and ".." itself
                _check_members(archive, members, z.namelist())
                z.extractall(into, members=members)
            return
        with tarfile.open(archive) as tar:
            _check_members(archive, members, tar.getnames())
            chosen = [tar.getmember(m) for m in members] if members is not None else None
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=chosen, filter="data")  # refuses absolute paths, .. and devices
            else:
                tar.extractall(into, members=chosen)
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as e:
        raise GroveError(
            f"cannot extract {archive} ({_one_line(e)}): free some disk space if it is full, "
            "else delete the archive (it may be damaged) and run again"
        ) from None


def _check_members(archive: Path, wanted: list[str] | None, names: list[str]) -> None:
    absent = [m for m in wanted or () if m not in set(names)]
    if absent:
        raise GroveError(
            f"{archive} has no {', '.join(absent)}: it is not the expected archive; delete it and run again"
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _digests(path: Path, expected: dict[str, str]) -> dict:
    hashes = {name: hashlib.new(name) for name in expected}
    if hashes:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                for h in hashes.values():
                    h.update(chunk)
    return hashes


def _mismatch(hashes: dict, expected: dict[str, str]) -> str | None:
    """The name of the first digest that differs from the expected one, else None."""
    for name, digest in expected.items():
        if hashes[name].hexdigest() != digest:
            return f"{name} checksum"
    return None


def _one_line(reason) -> str:
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return " ".join(text.split()) or type(reason).__name__
