"""All-or-nothing writes and extractions: an interrupted one leaves nothing a later run trusts."""

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import zipfile

import pytest

from grove.data.download import COMPLETE, extract_archive, extract_files
from grove.data.text import corpora, wikitext2
from grove.errors import GroveError
from grove.files import atomic_file, atomic_write, staging_dir

TOKENS = {split: "".join(f" the cat sat on the mat {i} \n" for i in range(40)) for split in ("train", "valid", "test")}


def wikitext_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        for split, text in TOKENS.items():
            z.writestr(f"wikitext-2/wiki.{split}.tokens", text)
    return path


def speech_tar(path):
    with tarfile.open(path, "w:gz") as tar:
        for name in ("yes/a.wav", "yes/b.wav", "no/c.wav"):
            data = name.encode() * 1000
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def visible(folder):
    return sorted(p.name for p in folder.iterdir())


def fail_after_one_member():
    """An extractall that writes its first member and part of the next, then fails as a full disk
    (or a kill) would."""

    def extractall(self, path, members=None, **kwargs):
        if isinstance(self, zipfile.ZipFile):
            names = members if members is not None else self.namelist()
            self.extract(names[0], path)
            partial = os.path.join(path, names[1])
            os.makedirs(os.path.dirname(partial), exist_ok=True)
            with open(partial, "wb") as f:
                f.write(self.read(names[1])[:10])
        else:
            first, second = (members or self.getmembers())[:2]
            self.extract(first, path)
            with open(os.path.join(path, second.name), "wb") as f:
                f.write(b"half")
        raise OSError(28, "No space left on device")

    return extractall


def test_interrupted_zip_extraction_leaves_no_file_and_a_rerun_extracts(tmp_path, monkeypatch):
    archive = wikitext_zip(tmp_path / "wikitext-2-v1.zip")
    folder = tmp_path / "wt2"
    members = {f"wikitext-2/wiki.{s}.tokens": f"wiki.{s}.tokens" for s in TOKENS}
    monkeypatch.setattr(zipfile.ZipFile, "extractall", fail_after_one_member())
    with pytest.raises(GroveError, match="cannot extract .*No space left on device"):
        extract_files(archive, folder, members)
    assert visible(folder) == []  # neither a whole nor a partial file, nor the staging folder
    monkeypatch.undo()

    extract_files(archive, folder, members)
    assert visible(folder) == sorted(members.values())
    assert all((folder / f"wiki.{s}.tokens").read_text() == TOKENS[s] for s in TOKENS)


def test_wikitext2_after_an_interrupted_extraction(tmp_path, monkeypatch):
    folder = tmp_path / "wt2"
    folder.mkdir()
    archive = wikitext_zip(folder / "wikitext-2-v1.zip")
    monkeypatch.setattr(corpora, "WIKITEXT2_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    real = zipfile.ZipFile.extractall
    monkeypatch.setattr(zipfile.ZipFile, "extractall", fail_after_one_member())
    with pytest.raises(GroveError, match="cannot extract"):
        wikitext2(root=folder, rows=2, bptt=4)
    assert visible(folder) == ["wikitext-2-v1.zip"]  # no wiki.*.tokens that the next run would trust

    monkeypatch.setattr(zipfile.ZipFile, "extractall", real)
    bundle = wikitext2(root=folder, rows=2, bptt=4)
    assert (folder / "wiki.valid.tokens").read_text() == TOKENS["valid"] and len(bundle.train) > 0


def test_files_already_there_are_kept(tmp_path):
    archive = wikitext_zip(tmp_path / "a.zip")
    (tmp_path / "wiki.train.tokens").write_text("mine")
    extract_files(archive, tmp_path, {"wikitext-2/wiki.train.tokens": "wiki.train.tokens"})
    assert (tmp_path / "wiki.train.tokens").read_text() == "mine"


def test_a_member_the_archive_lacks_is_named(tmp_path):
    archive = wikitext_zip(tmp_path / "a.zip")
    with pytest.raises(GroveError, match="has no wikitext-2/nope.txt: it is not the expected archive"):
        extract_files(archive, tmp_path / "out", {"wikitext-2/nope.txt": "nope.txt"})
    assert visible(tmp_path / "out") == []


def test_interrupted_tar_extraction_leaves_no_folder_and_a_rerun_extracts(tmp_path, monkeypatch):
    archive = speech_tar(tmp_path / "sc.tar.gz")
    dest = tmp_path / "cache" / "speech_commands"
    monkeypatch.setattr(tarfile.TarFile, "extractall", fail_after_one_member())
    with pytest.raises(GroveError, match="cannot extract"):
        extract_archive(archive, dest)
    assert visible(dest.parent) == []
    monkeypatch.undo()

    assert extract_archive(archive, dest) == dest
    assert (dest / COMPLETE).exists() and (dest / "no" / "c.wav").read_bytes() == b"no/c.wav" * 1000
    assert visible(dest.parent) == ["speech_commands"]


def test_a_folder_without_the_marker_is_extracted_again(tmp_path):
    archive = speech_tar(tmp_path / "sc.tar.gz")
    dest = tmp_path / "speech_commands"
    (dest / "yes").mkdir(parents=True)
    (dest / "yes" / "a.wav").write_bytes(b"half")  # left by an extraction that did not finish
    extract_archive(archive, dest)
    assert (dest / "yes" / "a.wav").read_bytes() == b"yes/a.wav" * 1000 and (dest / COMPLETE).exists()


def test_a_damaged_archive_is_one_line(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(GroveError, match="cannot extract .*delete the archive") as err:
        extract_archive(bad, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_staging_folders_of_killed_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    host = socket.gethostname()
    leftover = tmp_path / f".staging-{host}-{pid}-0badcafe"
    (leftover / "wiki.train.tokens").parent.mkdir(parents=True)
    (leftover / "wiki.train.tokens").write_text("half")
    mine = tmp_path / f".staging-{host}-{os.getpid()}-12345678"  # a live process's: kept
    mine.mkdir()
    with staging_dir(tmp_path) as path:
        assert path.is_dir()
    assert not leftover.exists() and mine.exists() and not path.exists()


def test_atomic_file_replaces_only_when_complete(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as f:
            f.write(b"new but cut short")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and visible(tmp_path) == ["out.bin"]
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and oct(path.stat().st_mode & 0o777) != "0o600"
