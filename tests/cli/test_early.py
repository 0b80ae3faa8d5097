"""`grader run` starts the batch's zygote before it imports the rest of itself (grader.cli.early)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from grader import __main__ as entry
from grader.cli import early
from grader.cli import main as cli
from grader.isolation import zygote
from grader.store.gradebook import Gradebook
from tests.conftest import TINY_SOLUTION, running

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only a root grader forks kernels")


def test_early_reads_the_options_of_grader_run_as_the_command_does():
    (commands,) = [a for a in cli.build_parser()._actions if a.dest == "command"]

    def declared(parser):
        return {(*a.option_strings, a.dest, a.nargs, a.default, a.required, a.type) for a in parser._actions
                if a.dest != "help"}

    assert declared(early.parser()) == declared(commands.choices["run"])
    argv = ["tiny", "--submissions", "subs", "--workers", "2", "--no-sandbox", "--similar", "80"]
    command = vars(cli.build_parser().parse_args(["run", *argv]))
    assert {k: command[k] for k in ("command", "handler")} == {"command": "run", "handler": cli.cmd_run}
    read = vars(early.parser().parse_args(argv))
    assert read == {k: v for k, v in command.items() if k not in ("command", "handler")}
    assert read["executor"] == "local" and read["similar"] == 0.8


def test_early_never_prints_or_exits_on_arguments_it_cannot_read(capsys):
    for argv in (["tiny"], ["tiny", "--submissions", "s", "--unknown"], ["tiny", "--submissions", "s",
                                                                         "--executor", "slurm"]):
        with pytest.raises(ValueError):
            early.parser().parse_args(argv)
    early.start(["run", "--submissions"])
    assert capsys.readouterr() == ("", "")


@root_only
@pytest.mark.parametrize("extra", [["--no-sandbox"], ["--executor", "ray"], ["--gpus", "auto"],
                                   ["--workers", "two"]])
def test_early_starts_nothing_where_the_batch_forks_no_kernel(extra, course, tmp_path, monkeypatch,
                                                              write_notebook):
    write_notebook(tmp_path / "subs", "a", *TINY_SOLUTION)
    argv = ["run", "tiny", "--course", str(course), "--submissions", str(tmp_path / "subs")]
    python, env, modules = early.spec(argv)  # the batch's zygote, where nothing says otherwise
    assert (python, env["OMP_NUM_THREADS"], modules) == (sys.executable, str(os.cpu_count()), ["numpy"])
    monkeypatch.setattr(early.shutil, "which", lambda name: f"/usr/bin/{name}")  # nvidia-smi is here
    assert early.spec(["list"]) is None
    assert early.spec([*argv, *extra]) is None


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, list, list]:
    """`grader ARGV` as its entry point runs it, in this process; the zygotes it spawned and
    those its batch was given."""
    spawned, given = [], []
    real_spawn, real_get = zygote.Zygote.spawn, zygote.Zygotes.get

    def spawn(self):
        done = real_spawn(self)
        spawned.append((self, self.process.pid if self.process else -1))
        return done

    def get(self, *args, **kwargs):
        made = real_get(self, *args, **kwargs)
        given.append(made)
        return made

    monkeypatch.setattr(zygote.Zygote, "spawn", spawn)
    monkeypatch.setattr(zygote.Zygotes, "get", get)
    monkeypatch.setattr(sys, "argv", ["grader", *argv])
    return entry.main(), spawned, given


@root_only
@pytest.mark.slow  # a zygote and two forked kernels
@pytest.mark.parametrize("workers", ["1", "auto"])
def test_grader_run_takes_over_the_zygote_it_started_before_its_imports(course, tmp_path, monkeypatch,
                                                                         write_notebook, workers):
    for name in ("a", "b"):
        write_notebook(tmp_path / "subs", name, *TINY_SOLUTION, "import numpy\nprint(len('x'))")
    book = tmp_path / "g.sqlite"
    code, spawned, given = _run(["run", "tiny", "--course", str(course), "--submissions",
                                 str(tmp_path / "subs"), "--gradebook", str(book), "--reports",
                                 str(tmp_path / "r"), "--workers", workers], monkeypatch)
    assert code == 0
    # one zygote, started by grader.cli.early, and the one the batch forked its kernels from
    (made, pid), = spawned
    assert running(pid) is False and given and all(g is made for g in given), (spawned, given)
    assert zygote._early is None
    assert [r.score for r in Gradebook(book).latest("tiny")] == [6, 6]


@root_only
@pytest.mark.slow  # two zygotes and a forked kernel
def test_a_zygote_started_early_that_the_batch_does_not_ask_for_is_stopped(course, tmp_path, monkeypatch,
                                                                          write_notebook):
    write_notebook(tmp_path / "subs", "a", *TINY_SOLUTION)
    argv = ["run", "tiny", "--course", str(course), "--submissions", str(tmp_path / "subs"),
            "--gradebook", str(tmp_path / "g.sqlite"), "--reports", str(tmp_path / "r")]
    # another environment than the batch's (as when fewer submissions are left than workers)
    real_spec = early.spec

    def other(args: list[str]):
        python, env, modules = real_spec(args)
        return python, {**env, "OMP_NUM_THREADS": "99"}, modules

    monkeypatch.setattr(early, "spec", other)
    code, spawned, given = _run(argv, monkeypatch)
    assert code == 0 and len(spawned) == 2, spawned
    assert given and all(g is spawned[1][0] for g in given), (spawned, given)  # the second
    assert spawned[0][0].env["OMP_NUM_THREADS"] == "99" and not running(spawned[0][1])  # stopped
    assert [r.score for r in Gradebook(Path(tmp_path / "g.sqlite")).latest("tiny")] == [6]
    # nothing left to grade: the batch asks for no zygote, and the early one is stopped
    monkeypatch.setattr(early, "spec", real_spec)
    code, spawned, given = _run(argv, monkeypatch)
    assert code == 0 and len(spawned) == 1 and given == [], (spawned, given)
    assert not running(spawned[0][1]) and zygote._early is None
