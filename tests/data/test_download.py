import hashlib

import pytest

from grove.data.download import data_dir, fetch
from grove.errors import GroveError

UNREACHABLE = "http://127.0.0.1:9/archive.tar.gz"  # port 9 (discard) refuses at once


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source" / "archive.tar.gz"
    path.parent.mkdir()
    path.write_bytes(b"grove test payload" * 1000)
    return path


def digests(path):
    data = path.read_bytes()
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def test_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GROVE_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("GROVE_DATA_DIR")
    assert data_dir().parts[-3:] == (".cache", "grove", "data")


def test_fetch_downloads_and_verifies(tmp_path, source):
    md5, sha256 = digests(source)
    dest = tmp_path / "cache" / "sub" / "archive.tar.gz"
    assert fetch(source.as_uri(), dest, md5=md5, sha256=sha256) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["archive.tar.gz"]


def test_existing_file_is_not_downloaded_again(tmp_path, source):
    md5, _ = digests(source)
    dest = tmp_path / "archive.tar.gz"
    dest.write_bytes(source.read_bytes())
    assert fetch(UNREACHABLE, dest, md5=md5) == dest


def test_existing_file_with_wrong_checksum_says_delete_it(tmp_path):
    dest = tmp_path / "archive.tar.gz"
    dest.write_bytes(b"something else")
    with pytest.raises(GroveError, match="delete") as err:
        fetch(UNREACHABLE, dest, md5="0" * 32)
    assert str(dest) in str(err.value)


def test_bad_checksum_after_download_leaves_nothing(tmp_path, source):
    dest = tmp_path / "cache" / "archive.tar.gz"
    with pytest.raises(GroveError, match="sha256"):
        fetch(source.as_uri(), dest, sha256="f" * 64)
    assert list(dest.parent.iterdir()) == []


def test_offline_message_says_where_to_put_the_file(tmp_path):
    dest = tmp_path / "cache" / "archive.tar.gz"
    with pytest.raises(GroveError) as err:
        fetch(UNREACHABLE, dest, md5="0" * 32, what="the test archive")
    message = str(err.value)
    assert message.startswith(f"the test archive is not at {dest} and could not be downloaded (")
    assert message.endswith(f"download {UNREACHABLE} and put it at {dest}")
    assert "\n" not in message
    assert list(dest.parent.iterdir()) == []


def test_missing_local_source_is_reported_like_offline(tmp_path):
    dest = tmp_path / "archive.tar.gz"
    with pytest.raises(GroveError, match="could not be downloaded"):
        fetch((tmp_path / "nowhere.tar.gz").as_uri(), dest)
    assert not dest.exists()
