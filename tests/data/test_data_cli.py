"""`grader data list|import|fetch` run as a user runs them (through the CLI's main)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from data_conftest_helpers import registry_text, write_sources

from grader.data.cli import add_parser, main


@pytest.fixture
def setup(tmp_path: Path) -> tuple[list[str], Path]:
    """Common options (registry, data home) and a folder of sources to import."""
    registry = tmp_path / "registry.toml"
    registry.write_text(registry_text())
    options = ["--registry", str(registry), "--data-home", str(tmp_path / "home")]
    return options, write_sources(tmp_path / "sources")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subparsers of PARSER by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_data_command_and_option_has_help():
    parser = argparse.ArgumentParser(prog="grader")
    add_parser(parser.add_subparsers(dest="command"))
    data = subcommands(parser)["data"]
    assert data.description
    commands = subcommands(data)
    assert set(commands) == {"list", "fetch", "import"}
    for name, command in commands.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, f"{name} {action.dest}"
        assert any(a.dest == "data_home" for a in command._actions), name


def test_import_then_list_shows_everything_verified(setup, capsys):
    options, sources = setup
    assert main(["data", "import", str(sources), *options]) == 0
    assert main(["data", "list", *options]) == 0
    lines = {
        line.split()[0]: line.split()[1]
        for line in capsys.readouterr().out.splitlines()
        if line and line.split()[0] in ("tiny", "tinyzip", "tinytar", "made")
    }
    assert lines == {
        "tiny": "verified",
        "tinyzip": "verified",
        "tinytar": "verified",
        "made": "generated",
    }


def test_list_reports_missing_and_corrupt_entries(setup, capsys, tmp_path):
    options, sources = setup
    assert main(["data", "import", str(sources), "tiny", *options]) == 0
    assert main(["data", "list", *options]) == 0
    out = capsys.readouterr().out
    assert "tinyzip          missing" in out and "grader data fetch --all" in out
    (tmp_path / "home" / "raw" / "tiny" / "tiny.bin").write_bytes(b"x")
    assert main(["data", "list", *options]) == 1
    out = capsys.readouterr().out
    assert "tiny             CORRUPT" in out and "grader data fetch tiny" in out


def test_import_of_named_datasets_absent_from_the_folder_fails(setup, capsys, tmp_path):
    options, _ = setup
    (tmp_path / "empty").mkdir()
    assert main(["data", "import", str(tmp_path / "empty"), "tiny", *options]) == 2
    captured = capsys.readouterr()
    assert "tiny: failed (looked for" in captured.out
    assert captured.err.startswith("error: 1 dataset(s) not imported: tiny")
    assert captured.err.count("\n") == 1


def test_fetch_needs_names_or_all(setup, capsys):
    options, _ = setup
    assert main(["data", "fetch", *options]) == 2
    assert "name the datasets to fetch, or pass --all" in capsys.readouterr().err


def test_fetch_of_an_unknown_name_lists_the_known_ones(setup, capsys):
    options, _ = setup
    assert main(["data", "fetch", "nope", *options]) == 2
    assert "no dataset 'nope'" in capsys.readouterr().err


def test_fetch_all_skips_what_is_already_verified(setup, capsys):
    options, sources = setup
    assert main(["data", "import", str(sources), *options]) == 0
    assert main(["data", "fetch", "--all", *options]) == 0
    out = capsys.readouterr().out
    assert "tiny: verified, nothing to fetch" in out and "made: generated, nothing to fetch" in out


def test_a_bad_registry_is_one_line_naming_file_and_key_and_exit_2(tmp_path: Path, capsys):
    registry = tmp_path / "registry.toml"
    registry.write_text(registry_text().replace("bytes = ", "bytes = -", 1))
    assert main(["data", "list", "--registry", str(registry), "--data-home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {registry}: tiny.bytes must be a whole number, 0 or more, found -")
    assert err.count("\n") == 1 and "Traceback" not in err
