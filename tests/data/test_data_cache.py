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
from grader.model.errors import DataError


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


GOOD_FILE = (
    'title = "t"\nterms = "t"\ncitation = "c"\nkind = "file"\nurl = "https://x/f.bin"\n'
    'file = "f.bin"\nbytes = 5\n'
)
SHA = "a" * 64

# A registry entry [x], what its one-line message must name (file, key) and say is expected.
BAD_ENTRIES = [
    (GOOD_FILE + f'sha256 = "{SHA}"\ncolour = "red"\n', "unknown key x.colour", "expected one of: x.title"),
    (GOOD_FILE, "x.sha256 or md5 is missing", "kind 'file' needs url, file, bytes"),
    (GOOD_FILE.replace('kind = "file"', 'kind = "folder"'), "x.kind must be one of file, archive, generated",
     "'folder'"),
    (GOOD_FILE + 'sha256 = "abc"\n', "x.sha256 must be 64 lowercase hex digits", "'abc'"),
    (GOOD_FILE + f'sha256 = "{SHA.upper()}"\n', "x.sha256 must be 64 lowercase hex digits", "AAAA"),
    (GOOD_FILE + 'md5 = "xyz"\n', "x.md5 must be 32 lowercase hex digits", "'xyz'"),
    (GOOD_FILE.replace("bytes = 5", "bytes = -5") + f'sha256 = "{SHA}"\n', "x.bytes must be a whole number, "
     "0 or more", "found -5"),
    (GOOD_FILE.replace("bytes = 5", "bytes = 0") + f'sha256 = "{SHA}"\n', "x.bytes is missing", "above 0"),
    (GOOD_FILE.replace("bytes = 5", 'bytes = "5"') + f'sha256 = "{SHA}"\n', "x.bytes must be a whole number",
     "found '5'"),
    (GOOD_FILE.replace("https://x/f.bin", "ftp://x/f.bin") + f'sha256 = "{SHA}"\n',
     "x.url must be an http:// or https:// URL", "ftp://"),
    (GOOD_FILE.replace('file = "f.bin"', 'file = "../f.bin"') + f'sha256 = "{SHA}"\n',
     "x.file must be a plain name", "'../f.bin'"),
    (GOOD_FILE + f'sha256 = "{SHA}"\nlocal = ["/etc/passwd"]\n', "x.local must be a list of relative paths",
     "/etc/passwd"),
    (GOOD_FILE + f'sha256 = "{SHA}"\nlocal = "f.bin"\n', "x.local must be a list of strings", "'f.bin'"),
    (GOOD_FILE.replace('title = "t"', 'title = ""') + f'sha256 = "{SHA}"\n', "x.title must be a non-empty "
     "string", "found ''"),
    (GOOD_FILE.replace('title = "t"\n', "") + f'sha256 = "{SHA}"\n', "x.title is missing", "expected a string"),
    ('title = "t"\nterms = "t"\ncitation = "c"\nkind = "generated"\n', "x.recipe is missing",
     "kind 'generated' needs recipe"),
    ('title = "t"\nterms = "t"\ncitation = "c"\nkind = "archive"\nurl = "https://x/a.zip"\nfile = "a.zip"\n'
     'root = "a"\nmembers = ["../*"]\ncontent_files = 1\ncontent_sha256 = "' + SHA + '"\n',
     "x.members must be a list of relative paths without '..'", "'../*'"),
]


@pytest.mark.parametrize(("body", "key", "expected"), BAD_ENTRIES)
def test_registry_refuses_a_bad_entry_with_one_line_naming_file_key_and_expectation(
    tmp_path: Path, body: str, key: str, expected: str
):
    path = tmp_path / "bad.toml"
    path.write_text(f"[x]\n{body}")
    with pytest.raises(DataError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert key in message and expected in message, message


def test_registry_refuses_an_entry_that_is_no_table_or_has_an_unsafe_name(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('x = "mnist"\n')
    with pytest.raises(DataError, match=f"^{path}: x must be a table, found 'mnist'$"):
        load_registry(path)
    path.write_text(f'["../up"]\n{GOOD_FILE}sha256 = "{SHA}"\n')
    with pytest.raises(DataError, match=r"\[\.\./up\] must be a plain name"):
        load_registry(path)


def test_a_valid_entry_loads_with_its_types(tmp_path: Path):
    path = tmp_path / "good.toml"
    path.write_text(f'[x]\n{GOOD_FILE}sha256 = "{SHA}"\nlocal = ["x/f.bin"]\n')
    entry = load_registry(path)["x"]
    assert (entry.name, entry.bytes, entry.local, entry.content_hash) == ("x", 5, ("x/f.bin",), SHA)


def test_the_shipped_registry_is_read_from_inside_the_package():
    import grader

    shipped = Path(grader.__file__).parent / "data" / "registry.toml"
    assert load_registry().path == str(shipped)
    assert shipped.is_file()


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
