"""The command line as a user runs it."""

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys

import pytest

from grader.cli.main import EXPORT_COLUMNS, build_parser
from grader.grading import devices
from tests.conftest import REPO, TINY_SOLUTION


def grader(*args, cwd=None, ok=True):
    run = subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    if ok:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_command_and_option_has_help_text():
    parser = build_parser()
    seen = []
    stack = list(_subparsers(parser))
    while stack:
        name, sub = stack.pop()
        seen.append(name)
        assert sub.description, f"`grader {name}` has no description"
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"`grader {name}` option {action.dest} has no help"
        stack.extend(_subparsers(sub))
    assert {"list", "release", "validate", "run", "report", "export", "data"} <= set(seen)


def test_validate_grades_one_notebook_at_a_time_and_run_as_many_as_the_machine_allows():
    from grader.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["validate", "a"]).workers == "1"  # the reference gets every core
    assert parser.parse_args(["validate", "a", "--workers", "auto"]).workers == "auto"
    assert parser.parse_args(["run", "a", "--submissions", "s"]).workers == "auto"


@pytest.mark.parametrize("args", [
    ["run", "nope", "--submissions", "."],
    ["run", "tiny", "--submissions", "missing-folder"],
    ["run", "tiny", "--submissions", ".", "--workers", "0"],
    ["run", "tiny", "--submissions", ".", "--per-gpu", "0"],
    ["validate", "tiny", "--per-gpu", "two"],
    ["doctor", "--per-gpu", "-1"],
    ["export", "tiny", "--gradebook", "missing.sqlite"],
    ["report", "tiny", "--gradebook", "missing.sqlite"],
    ["release", "../../etc"],
    ["list", "--course", "/nonexistent"],
])
def test_bad_input_is_one_line_and_exit_2(course, args):
    run = grader(*args, "--course", course, cwd=course, ok=False) if "--course" not in args else \
        grader(*args, cwd=course, ok=False)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout


@pytest.mark.parametrize(("edit", "key"), [
    (("cell_seconds = 10", "cell_seconds = -1"), "limits.cell_seconds must be a number above 0"),
    (("points = 6", 'points = "six"'), "points must be a number"),
    (("seed = 7", "seed = 7\ncolour = 1"), "unknown key colour"),
])
def test_run_on_a_bad_assignment_toml_is_one_line_exit_2_and_stores_nothing(course, write_notebook, edit, key):
    config = course / "assignments" / "tiny" / "assignment.toml"
    config.write_text(config.read_text().replace(*edit))
    write_notebook(course / "subs", "alice", *TINY_SOLUTION)
    run = grader("run", "tiny", "--submissions", course / "subs", "--course", course, cwd=course, ok=False)
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {config}: {key}"), run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr + run.stdout
    assert not (course / "gradebook.sqlite").exists()


@pytest.mark.slow
def test_run_export_report_and_list(course, tmp_path, write_notebook):
    subs = tmp_path / "subs"
    write_notebook(subs, "alice", *TINY_SOLUTION)
    write_notebook(subs / "bob", "work", "raise ValueError('bob')")
    listed = grader("list", "--course", course)
    assert "tiny" in listed.stdout and "Tiny: the tests' own assignment" in listed.stdout
    run = grader("run", "tiny", "--course", course, "--submissions", subs, cwd=tmp_path)
    assert "2 graded, 0 already graded" in run.stdout
    gpu = shutil.which("nvidia-smi") is not None
    said = "grading on GPU" if gpu else "grading on the CPU (no GPU found"
    assert run.stdout.count(said) == 1 and run.stdout.count("grading on") == 1, run.stdout
    assert (tmp_path / "reports" / "tiny" / "index.html").exists()
    assert (tmp_path / "gradebook.sqlite").exists()
    again = grader("run", "tiny", "--course", course, "--submissions", subs, cwd=tmp_path)
    assert "0 graded, 2 already graded" in again.stdout
    rows = list(csv.DictReader(io.StringIO(grader("export", "tiny", "--course", course,
                                                  cwd=tmp_path).stdout)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert [(r["student"], r["score"], r["status"]) for r in rows] == [
        ("alice", "6.0", "graded"), ("bob", "0.0", "cell_error")]
    if not gpu:  # what TensorFlow ran on reaches the export, the student's page and the summary
        assert [r["device"] for r in rows] == ["CPU", "CPU"]
        assert "<th>Device</th><td>CPU</td>" in (tmp_path / "reports/tiny/alice.html").read_text()
        assert "<td>CPU</td>" in (tmp_path / "reports/tiny/index.html").read_text()
    data = json.loads(grader("export", "tiny", "--format", "json", "--course", course,
                             cwd=tmp_path).stdout)
    assert data[1]["reason"] == "code cell 1 raised ValueError: bob" and data[0]["graded_at"].endswith("+00:00")
    (tmp_path / "reports" / "tiny" / "alice.html").unlink()
    grader("report", "tiny", "--course", course, cwd=tmp_path)
    assert "6 / 6" in (tmp_path / "reports" / "tiny" / "alice.html").read_text()


@pytest.mark.slow
def test_run_stores_the_late_penalty_and_an_extension_granted_later_rewrites_the_page(
        course, tmp_path, write_notebook):
    config = course / "assignments" / "tiny" / "assignment.toml"
    config.write_text(config.read_text() + '\n[deadline]\ndue = "2020-01-01T00:00:00+00:00"\n'
                      'rate = 0.1\ncap = 0.5\nextensions = "extensions.csv"\n')
    (course / "assignments" / "tiny" / "extensions.csv").write_text("student,due\n")
    subs = tmp_path / "subs"
    write_notebook(subs, "alice", *TINY_SOLUTION)  # handed in now (its file time): years late
    grader("run", "tiny", "--course", course, "--submissions", subs, cwd=tmp_path)
    (row,) = csv.DictReader(io.StringIO(grader("export", "tiny", "--course", course, cwd=tmp_path).stdout))
    assert (row["score"], row["raw_score"], row["late_penalty"]) == ("3.0", "6.0", "3.0")
    page = tmp_path / "reports" / "tiny" / "alice.html"
    assert "Final score</th><td>3 / 6" in page.read_text()
    (course / "assignments" / "tiny" / "extensions.csv").write_text("student,due\nalice,2999-01-01T00:00:00Z\n")
    again = grader("run", "tiny", "--course", course, "--submissions", subs, cwd=tmp_path)
    assert "0 graded, 1 already graded" in again.stdout, "a new extension runs no notebook"
    assert "Final score" not in page.read_text() and "6 / 6" in page.read_text()
    (row,) = csv.DictReader(io.StringIO(grader("export", "tiny", "--course", course, cwd=tmp_path).stdout))
    assert (row["score"], row["late_penalty"]) == ("6.0", "0.0")


@pytest.mark.slow
def test_release_and_validate(course):
    release = course / "assignments" / "tiny" / "release" / "tiny.ipynb"
    committed = release.read_bytes()
    release.unlink()
    grader("release", "tiny", "--course", course)
    assert release.read_bytes() == committed
    grader("validate", "tiny", "--course", course)


@pytest.mark.slow
def test_validate_fails_when_the_reference_is_wrong(course):
    source = course / "assignments" / "tiny" / "source" / "tiny.ipynb"
    source.write_text(source.read_text().replace("guess = 99.5", "guess = 1"))
    run = grader("validate", "tiny", "--course", course, ok=False)
    assert run.returncode == 1 and "the reference got 4/6" in run.stderr


def test_release_refuses_a_leaking_starter(course):
    source = course / "assignments" / "tiny" / "source" / "tiny.ipynb"
    source.write_text(source.read_text().replace(
        "# Tiny", "# Tiny\\n\\nSee test_double for how we grade."))
    run = grader("release", "tiny", "--course", course, ok=False)
    assert run.returncode == 2 and "would leak" in run.stderr and "test_double" in run.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["run", "tiny", "--submissions", "assignments/tiny/assignment.toml"],
     "is a file, not a folder of submissions; pass the folder that holds it"),
    (["run", "tiny", "--submissions", ".", "--gradebook", "mysql+pymysql://u:secret@localhost/db"],
     "pip install pymysql"),
    (["run", "tiny", "--submissions", ".", "--gradebook", "postgresql://u:secret@127.0.0.1:1/db"],
     "check that the database server runs"),
    pytest.param(["report", "tiny", "--gradebook", "mysql+pymysql://u:secret@localhost/db"], "pip install",
                 marks=pytest.mark.slow),  # grades first: a kernel starts
    (["run", "tiny", "--submissions", ".", "--reports", "assignments/tiny/assignment.toml"],
     "is a file, not a folder"),
    pytest.param(["report", "tiny", "--reports", "assignments/tiny/assignment.toml/sub"], "is a file",
                 marks=pytest.mark.slow),
    (["run", "tiny", "--submissions", ".", "--no-sandbox", "--gpus", "99"], "no GPU 99"),
    # a mistyped folder never makes a new gradebook (the next run would grade everything again)
    (["run", "tiny", "--submissions", ".", "--no-sandbox", "--gradebook", "gradebok/g.sqlite"],
     "there is no folder gradebok"),
])
def test_edge_cases_are_one_line_exit_2_and_say_what_to_do(course, args, words):
    if args[0] == "report":
        grader("run", "tiny", "--submissions", "assignments", "--no-sandbox", "--course", course, cwd=course)
    run = grader(*args, "--course", course, cwd=course, ok=False)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert words in run.stderr and "secret" not in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert not (course / "gradebok").exists()


def test_export_neutralises_formulas_and_leaves_grader_faults_unscored(tmp_path, capsys):
    from grader.cli.main import main
    from grader.model.result import Result
    from grader.store.gradebook import Gradebook

    book = tmp_path / "book.sqlite"
    gradebook = Gradebook(book)
    for student, status, score, reason in [
        ("=HYPERLINK(\"http://x\")", "graded", 4.0, "+1 cell"),
        ("@sum", "cell_error", 1.0, "-2 is wrong"),
        ("carol", "error", 0.0, "\tthe grader failed"),
    ]:
        gradebook.store(Result(student=student, assignment="tiny", notebook="n.ipynb", sha256="ab" * 32,
                               checks_sha256="c", status=status, reason=reason, score=score, max_score=6,
                               device="GPU 0 (Test GPU)" if status == "graded" else "CPU"))
    course = REPO / "tests" / "files" / "course"
    assert main(["export", "tiny", "--course", str(course), "--gradebook", str(book)]) == 0
    rows = {r["status"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows["graded"]["student"] == "'=HYPERLINK(\"http://x\")" and rows["graded"]["reason"] == "'+1 cell"
    assert rows["cell_error"]["student"] == "'@sum" and rows["cell_error"]["reason"] == "'-2 is wrong"
    assert rows["cell_error"]["score"] == "1.0"
    assert rows["error"]["score"] == "" and rows["error"]["reason"] == "'\tthe grader failed"
    assert main(["export", "tiny", "--course", str(course), "--gradebook", str(book), "--format", "json"]) == 0
    data = {r["status"]: r for r in json.loads(capsys.readouterr().out)}
    assert data["error"]["score"] is None and data["graded"]["score"] == 4.0
    assert data["graded"]["device"] == "GPU 0 (Test GPU)" and rows["error"]["device"] == "CPU"


def fake_batch(monkeypatch, seen: list):
    """No preflight and no kernels: the batch only records the settings it was given."""
    from grader.cli import run as cli
    from grader.grading.executor import Batch

    def grade_batch(assignment, submissions, *, settings, on_result, **kwargs):
        seen.append(settings)
        for _ in submissions:
            on_result(None)
        return Batch()

    monkeypatch.setattr(cli, "preflight_checks", lambda *a, **k: [])
    monkeypatch.setattr(cli, "grade_batch", grade_batch)


def test_auto_without_a_gpu_grades_on_the_cpu_and_says_so_once(course, tmp_path, monkeypatch, capsys):
    from grader.cli.main import main

    monkeypatch.setenv("PATH", str(tmp_path / "no-nvidia-smi"))  # as on the test machine
    subs = tmp_path / "subs"
    for student in ("a", "b", "c"):
        (subs / f"{student}.ipynb").parent.mkdir(exist_ok=True)
        (subs / f"{student}.ipynb").write_text("{}")
    seen: list = []
    fake_batch(monkeypatch, seen)
    main(["run", "tiny", "--submissions", str(subs), "--course", str(course), "--no-sandbox",
          "--gradebook", str(tmp_path / "b.sqlite"), "--reports", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert out.count("grading on the CPU (no GPU found: nvidia-smi is missing or lists none)") == 1
    assert out.count("grading on") == 1
    assert seen[0].workers is None and set(seen[0].slots()) == {devices.CPU}  # auto


def test_gpus_and_per_gpu_reach_the_batch_and_the_run_says_so(course, tmp_path, monkeypatch, capsys):
    from grader.cli.main import main
    from tests.grading.test_devices import fake_smi

    fake_smi(tmp_path, monkeypatch, "0, GPU-aaaa, 00000000:3B:00.0, 16000, Test GPU\n"
                                    "1, GPU-bbbb, 00000000:86:00.0, 16000, Test GPU\n")
    seen: list = []
    fake_batch(monkeypatch, seen)
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.ipynb").write_text("{}")
    main(["run", "tiny", "--submissions", str(tmp_path / "subs"), "--course", str(course),
          "--no-sandbox", "--gradebook", str(tmp_path / "b.sqlite"), "--reports",
          str(tmp_path / "r"), "--gpus", "1", "--per-gpu", "2"])
    out = capsys.readouterr().out
    assert ("grading on GPU 1 (Test GPU): 2 kernel(s) per GPU, 2 at once; TensorFlow may use "
            "7488 MB of GPU memory per kernel") in out
    assert [(d.cuda_visible_devices, d.memory_limit_mb) for d in seen[0].slots()] == [
        ("GPU-bbbb", 7488)] * 2


def _closing_counts(stdout: str) -> tuple[int, int, int]:
    """Graded, already graded, and being graded by another run, from `grader run`'s closing line."""
    words = " ".join(stdout.split())  # rich wraps long lines where there is no terminal
    found = re.search(r"(\d+) graded, (\d+) already graded \(use --force to regrade\)"
                      r"(?:, (\d+) being graded by another grader run)? in ", words)
    assert found, words[-1500:]
    return int(found[1]), int(found[2]), int(found[3] or 0)


@pytest.mark.slow  # two graders, each running its kernels
def test_two_grader_runs_at_once_on_one_postgresql_gradebook_grade_each_submission_once(
        course, tmp_path, write_notebook, postgres_url):
    from grader.store.gradebook import Gradebook

    names = [f"s{i}" for i in range(6)]
    for name in names:  # long enough that the second grader starts while the first grades
        write_notebook(tmp_path / "subs", name, *TINY_SOLUTION, "import time\ntime.sleep(3)")
    command = [sys.executable, "-m", "grader", "run", "tiny", "--course", str(course), "--submissions",
               str(tmp_path / "subs"), "--gradebook", postgres_url, "--workers", "1", "--no-sandbox"]
    graders = [subprocess.Popen([*command, "--reports", str(tmp_path / f"reports{i}")], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    outputs = [grader.communicate(timeout=600) for grader in graders]
    assert [g.returncode for g in graders] == [0, 0], [err[-2000:] for _, err in outputs]
    counts = [_closing_counts(out) for out, _ in outputs]
    assert all(sum(each) == len(names) for each in counts), counts  # each line accounts for all
    assert sum(graded for graded, _, _ in counts) == len(names), counts
    assert min(graded for graded, _, _ in counts) >= 1, f"the two graders did not overlap: {counts}"
    book = Gradebook(postgres_url)
    assert book.count_runs("tiny") == {name: 1 for name in names}
    assert {(r.status, r.score) for r in book.latest("tiny")} == {("graded", 6)}
    assert book.claims("tiny") == {}


def _run_with(monkeypatch, course, tmp_path, grade_batch) -> int:
    """`grader run` of one fake submission, the batch being GRADE_BATCH (no kernel)."""
    from grader.cli import run as cli
    from grader.cli.main import main

    monkeypatch.setattr(cli, "preflight_checks", lambda *a, **k: [])
    monkeypatch.setattr(cli, "grade_batch", grade_batch)
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.ipynb").write_text("{}")
    return main(["run", "tiny", "--submissions", str(tmp_path / "subs"), "--course", str(course),
                 "--no-sandbox", "--gradebook", str(tmp_path / "b.sqlite"), "--reports",
                 str(tmp_path / "r"), "--workers", "1"])


def test_the_run_shows_student_text_plain_and_a_fault_with_no_score(course, tmp_path, monkeypatch, capsys):
    """Markup in a student id or reason is shown as it is (no MarkupError), escape sequences
    (OSC, private CSI, RIS) never reach the terminal, and a grader fault is no 0/6."""
    from grader.grading.executor import Batch
    from grader.model.result import Result

    def grade_batch(assignment, submissions, **kwargs):
        made = Batch()
        for student, status, reason in [
                ("[/x]eve\x1b]0;owned\x07", "cell_error", "[/x] cell 2 \x1b[?1049h\x1bc raised [bold]"),
                ("bob", "error", "not graded yet")]:
            made.graded.append(Result(student=student, assignment="tiny", notebook="n", sha256="s",
                                      checks_sha256="k", status=status, reason=reason, score=0,
                                      max_score=6))
        made.stopped = "stopped: 1 of the first 1 failed (ValueError: \x1b]52;c;aGk=\x07[/x])"
        return made

    assert _run_with(monkeypatch, course, tmp_path, grade_batch) == 1
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "[/x]eve" in out and "[/x] cell 2" in out and "[bold]" in out
    bob = next(line for line in out.splitlines() if "bob" in line)
    assert "0/6" not in bob and "—/6" in bob and "error" in bob
    assert err.startswith("error: stopped: 1 of the first 1 failed (ValueError: ?]52;c;aGk=?[/x])")


def test_ctrl_c_says_at_once_that_the_run_is_stopping(course, tmp_path, monkeypatch, capsys):
    import os
    import signal
    import time

    said = []

    def grade_batch(assignment, submissions, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises KeyboardInterrupt here
        finally:  # the slots' kernels end meanwhile: the staff already know why they wait
            said.append(capsys.readouterr().err)
        raise AssertionError("Ctrl-C did not stop the batch")

    assert _run_with(monkeypatch, course, tmp_path, grade_batch) == 130
    assert said[0].startswith("stopping (Ctrl-C): no new notebook is begun; waiting for the kernels")
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
