"""`grader data fetch` against a loopback HTTP server: good, corrupt, truncated, error, slow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from data_conftest_helpers import TINY, Server, loopback, registry_text, tiny_tar, tiny_zip

from grader.data import cache, load_registry
from grader.data.cli import main
from grader.data.download import fetch

FAST = ["--retries", "1", "--backoff", "0", "--timeout", "0.3"]


@pytest.fixture
def server() -> Iterator[Server]:
    files = {"tiny.bin": TINY, "tiny.zip": tiny_zip(), "tiny.tar.gz": tiny_tar()}
    with loopback(files) as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def options(tmp_path: Path, home: Path) -> list[str]:
    registry = tmp_path / "registry.toml"
    registry.write_text(registry_text())
    return ["--registry", str(registry), "--data-home", str(home)]


def fetched(name: str, mode: str, server: Server, options: list[str]) -> int:
    """Run `grader data fetch NAME --mirror <server>/<mode>` with fast retries."""
    return main(["data", "fetch", name, "--mirror", f"{server.url}/{mode}", *FAST, *options])


def nothing_written(home: Path, name: str) -> bool:
    """No cache entry for NAME and no partial file left behind."""
    scratch = home / "raw" / ".tmp"
    return not (home / "raw" / name).exists() and not (scratch.exists() and any(scratch.iterdir()))


@pytest.mark.parametrize("name", ["tiny", "tinyzip", "tinytar"])
def test_a_good_file_is_downloaded_verified_and_cached(server, options, home, capsys, name):
    assert fetched(name, "good", server, options) == 0
    assert f"{name}: downloaded from {server.url}/good/" in capsys.readouterr().out
    registry = load_registry(Path(options[1]))
    assert cache.check(registry[name], home) == cache.Status(
        True, "", cache.check(registry[name], home).size
    )
    assert nothing_written(home, "never-there")


@pytest.mark.parametrize("name", ["tiny", "tinyzip"])
def test_a_corrupt_file_is_refused_and_nothing_is_written(server, options, home, capsys, name):
    assert fetched(name, "corrupt", server, options) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {server.url}/corrupt/") and "does not match" in err
    assert "nothing was cached" in err and err.count("\n") == 1
    assert nothing_written(home, name)


def test_a_truncated_transfer_is_retried_then_refused(server, options, home, capsys):
    assert fetched("tiny", "truncated", server, options) == 2
    err = capsys.readouterr().err
    assert "transfer cut short" in err and "gave up after 2 tries" in err
    assert server.hits["/truncated/tiny.bin"] == 2
    assert nothing_written(home, "tiny")


def test_a_transfer_cut_once_succeeds_on_the_retry(server, options, home):
    assert fetched("tiny", "cut-once", server, options) == 0
    assert (home / "raw" / "tiny" / "tiny.bin").read_bytes() == TINY


def test_a_server_error_is_retried_and_then_succeeds(server, options, home):
    assert fetched("tinyzip", "flaky", server, options) == 0
    assert server.hits["/flaky/tiny.zip"] == 2


def test_a_persistent_server_error_is_a_clear_error(server, options, home, capsys):
    assert fetched("tiny", "error", server, options) == 2
    err = capsys.readouterr().err
    assert "server error HTTP 500" in err and "gave up after 2 tries" in err
    assert "grader data import DIR" in err
    assert nothing_written(home, "tiny")


def test_a_slow_server_times_out_with_a_clear_error(server, options, home, capsys):
    began = time.monotonic()
    assert fetched("tiny", "slow", server, options) == 2
    assert time.monotonic() - began < 3
    assert "timed out" in capsys.readouterr().err
    assert nothing_written(home, "tiny")


def test_a_missing_file_is_not_retried(server, options, home, capsys):
    assert (
        main(
            [
                "data",
                "fetch",
                "tiny",
                "--mirror",
                f"{server.url}/good/nothing-here",
                *FAST,
                *options,
            ]
        )
        == 2
    )
    assert "HTTP 404" in capsys.readouterr().err
    assert server.hits == {"/good/nothing-here/tiny.bin": 1}


def test_the_mirror_can_come_from_the_environment(server, options, home, monkeypatch):
    monkeypatch.setenv("GRADER_DATA_MIRROR", f"{server.url}/good")
    assert main(["data", "fetch", "tiny", *FAST, *options]) == 0
    assert server.hits == {"/good/tiny.bin": 1}


def test_fetch_reports_progress(server, home, tmp_path):
    registry_file = tmp_path / "registry.toml"
    registry_file.write_text(registry_text())
    seen: list[tuple[int, int]] = []
    fetch(
        load_registry(registry_file)["tiny"],
        data_home=home,
        url=f"{server.url}/good/tiny.bin",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (len(TINY), len(TINY))
