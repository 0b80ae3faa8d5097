"""The registry, the verified cache and `grader data import`, on small files the tests make."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from data_conftest_helpers import MEMBERS, TINY, registry_text, tiny_zip, write_sources

from grader.data import cache
from grader.data.importing import import_dir
from grader.data.npz import FIXED_DATE, save_npz
from grader.data.registry import load_registry, mirror_url, raw_inputs
from grader.errors import DataError


@pytest.fixture
def registry(tmp_path: Path):
    path = tmp_path / "registry.toml"
    path.write_text(registry_text(), encoding="utf-8")
    return load_registry(path)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    return write_sources(tmp_path / "sources")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def imported(registry, sources: Path, home: Path) -> dict[str, str]:
    """Import every dataset and return name -> outcome."""
    entries = list(registry.values())
    return {r.name: r.outcome for r in import_dir(sources, entries, data_home=home)}


def test_course_registry_lists_every_dataset_with_hash_terms_and_citation():
    registry = load_registry()
    assert set(registry) == {
        "mnist",
        "boston_housing",
        "imdb_reviews",
        "imdb_word_index",
        "cats_and_dogs",
        "movielens",
        "grading",
    }
    for entry in registry.values():
        assert entry.terms and entry.citation, entry.name
        if entry.kind == "generated":
            continue
        assert entry.url.startswith("https://") and entry.url.endswith(entry.file)
        assert entry.bytes > 0
        assert len(entry.sha256 or entry.content_sha256) == 64, entry.name


def test_registry_refuses_unknown_keys_missing_hashes_and_unknown_kinds(tmp_path: Path):
    cases = {
        'colour = "red"': "unknown keys",
        'kind = "file"\nurl = "u"\nfile = "f"\nbytes = 1': "lacks sha256 or md5",
        'kind = "folder"': "has kind 'folder'",
    }
    for body, message in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(f'[x]\ntitle = "t"\nterms = "t"\ncitation = "c"\n{body}\n')
        if "kind" not in body:
            path.write_text(path.read_text() + 'kind = "generated"\nrecipe = "r"\n')
        with pytest.raises(DataError, match=message):
            load_registry(path)


def test_unknown_dataset_lists_the_known_ones(registry):
    with pytest.raises(DataError, match=r"no dataset 'nope'.*known: tiny, tinyzip"):
        registry.entry("nope")


def test_mirror_replaces_the_canonical_url(registry, monkeypatch):
    entry = registry["tiny"]
    assert mirror_url(entry) == entry.url
    assert mirror_url(entry, "http://mirror/x/") == "http://mirror/x/tiny.bin"
    monkeypatch.setenv("GRADER_DATA_MIRROR", "http://env")
    assert mirror_url(entry) == "http://env/tiny.bin"


def test_save_npz_is_byte_stable_and_refuses_pickle(tmp_path: Path):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array(["a", "bc"])}
    save_npz(tmp_path / "a.npz", arrays, compress=True)
    save_npz(tmp_path / "b.npz", arrays, compress=True)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {info.date_time for info in archive.infolist()} == {FIXED_DATE}
    with np.load(tmp_path / "a.npz") as loaded:
        assert loaded["y"].tolist() == ["a", "bc"]
    with pytest.raises(ValueError, match="allow_pickle"):
        save_npz(tmp_path / "c.npz", {"o": np.array([1, "a"], dtype=object)})


def test_import_verifies_and_caches_only_the_files_that_matter(registry, sources, home):
    assert imported(registry, sources, home) == {
        "tiny": "imported",
        "tinyzip": "imported",
        "tinytar": "imported",
        "made": "generated",
    }
    raw = raw_inputs(["tiny", "tinyzip", "tinytar"], data_home=home, registry=registry)
    assert raw["tiny"].read_bytes() == TINY
    for name in ("tinyzip", "tinytar"):  # a zip and a tar.gz of the same files pass alike
        files = {p.relative_to(raw[name]).as_posix() for p in raw[name].rglob("*") if p.is_file()}
        assert files == set(MEMBERS)
    assert not (home / "raw" / "tinyzip" / "evil.txt").exists()
    assert not list((home / "raw" / ".tmp").iterdir())


def test_import_again_keeps_the_verified_copy(registry, sources, home):
    imported(registry, sources, home)
    assert imported(registry, sources, home)["tinyzip"] == "verified"


def test_import_refuses_a_corrupt_source_and_caches_nothing(registry, sources, home):
    bad = dict(MEMBERS, **{"data/a.txt": b"alphA\n"})
    (sources / "zips" / "tiny.zip").write_bytes(tiny_zip(bad))
    (sources / "tiny" / "tiny.bin").write_bytes(TINY[:-1] + b"?")
    results = {r.name: r for r in import_dir(sources, list(registry.values()), data_home=home)}
    assert results["tinyzip"].outcome == "failed" and "content digest" in results["tinyzip"].detail
    assert results["tiny"].outcome == "failed" and "sha256" in results["tiny"].detail
    assert results["tinytar"].outcome == "imported"  # one bad file sinks no other
    assert not (home / "raw" / "tinyzip").exists() and not (home / "raw" / "tiny").exists()
    assert not list((home / "raw" / ".tmp").iterdir())


def test_a_broken_archive_is_reported_not_raised_as_a_traceback(registry, sources, home):
    (sources / "zips" / "tiny.zip").write_bytes(b"PK\3\4 this is no zip")
    results = {r.name: r for r in import_dir(sources, list(registry.values()), data_home=home)}
    assert results["tinyzip"].outcome == "failed"
    assert "not a readable zip or tar archive" in results["tinyzip"].detail


def test_a_missing_dataset_names_the_commands_that_get_it(registry, home):
    with pytest.raises(DataError) as error:
        raw_inputs(["tinyzip"], data_home=home, registry=registry)
    message = str(error.value)
    assert "is not in the cache" in message
    assert f"grader data fetch tinyzip --data-home {home}" in message
    assert "grader data import DIR" in message


def flip(path: Path, offset: int = 0) -> None:
    """Flip one bit of one byte of PATH."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "name, rel, found",
    [
        ("tiny", "tiny.bin", "tiny.bin has sha256"),
        ("tinyzip", "tiny/data/b.txt", "1 changed, e.g. tiny/data/b.txt"),
        ("tinytar", "tiny/data/sub/c.txt", "1 changed, e.g. tiny/data/sub/c.txt"),
    ],
)
def test_a_flipped_byte_in_the_cache_is_caught_before_use(
    registry, sources, home, name, rel, found
):
    imported(registry, sources, home)
    flip(home / "raw" / name / rel, offset=3)
    with pytest.raises(DataError) as error:
        raw_inputs([name], data_home=home, registry=registry)
    message = str(error.value)
    assert f"cached dataset {name!r} is corrupt" in message and found in message
    assert f"grader data fetch {name}" in message and "grader data import DIR" in message


def test_a_tampered_record_cannot_hide_a_change(registry, sources, home):
    imported(registry, sources, home)
    target = home / "raw" / "tinyzip" / "tiny" / "data" / "a.txt"
    target.write_bytes(b"changed\n")
    sums = home / "raw" / "tinyzip" / cache.SUMS  # rewrite the record to match the change
    text = sums.read_text().replace(
        hashlib.sha256(MEMBERS["data/a.txt"]).hexdigest(), hashlib.sha256(b"changed\n").hexdigest()
    )
    sums.write_text(text)
    with pytest.raises(DataError, match="content digest"):
        raw_inputs(["tinyzip"], data_home=home, registry=registry)


def test_an_added_or_removed_file_is_caught(registry, sources, home):
    imported(registry, sources, home)
    root = home / "raw" / "tinyzip" / "tiny"
    (root / "data" / "extra.txt").write_text("sneaked in")
    assert (
        "1 unexpected, e.g. tiny/data/extra.txt" in cache.check(registry["tinyzip"], home).problem
    )
    (root / "data" / "extra.txt").unlink()
    (root / "data" / "a.txt").unlink()
    assert "1 missing, e.g. tiny/data/a.txt" in cache.check(registry["tinyzip"], home).problem


def test_import_repairs_a_corrupt_cache_entry(registry, sources, home):
    imported(registry, sources, home)
    flip(home / "raw" / "tiny" / "tiny.bin")
    assert imported(registry, sources, home)["tiny"] == "imported"
    assert cache.check(registry["tiny"], home) == cache.Status(True, "", len(TINY))


def test_import_of_a_missing_folder_says_what_to_pass(registry, home, tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        list(import_dir(tmp_path / "nowhere", list(registry.values()), data_home=home))


def test_the_zip_in_the_helpers_really_holds_the_junk():
    names = zipfile.ZipFile(io.BytesIO(tiny_zip())).namelist()
    assert "../evil.txt" in names and "tiny/README.md" in names
