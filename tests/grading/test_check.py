"""The trusted checks against a live kernel: values cross typed and capped, results never come
from the student's side."""

import asyncio
import os
from pathlib import Path

import pytest

from grader.checker.exchange import Layout
from grader.grading.check import Checks, run_checks
from grader.grading.execute import executed
from grader.grading.kernelenv import kernel_env
from grader.grading.warmcheck import CheckerSlot, WarmChecker
from grader.isolation.sandbox import bwrap
from grader.model.config import Limits
from tests.conftest import notebook

LIMITS = Limits(cell_seconds=20, total_seconds=60, kernel_start_seconds=30, check_seconds=60)
NOBODY = 65534


def grade(tmp_path: Path, check_source: str, *cells: str, public: bool = False,
          warm: bool = False) -> dict:
    """Run CELLS, then the check file; return the outcomes by check name. WARM, the checks run
    in a worker slot's warm checker (CheckerSlot), else in a checker of their own."""
    checks = tmp_path / "checks" / ("public" if public else "hidden")
    checks.mkdir(parents=True)
    (checks / "test_it.py").write_text(check_source)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "answer.txt").write_text("42")
    run_dir = tmp_path / ("slot" if warm else "") / "run"
    work = run_dir / "work"
    work.mkdir(parents=True)
    # The checks run as the pipeline runs them: in bubblewrap, as a user of their own for a root
    # grader. The kernel here is not sandboxed; it leaves its sockets and values open to them.
    sandboxed = bwrap() is not None
    root = sandboxed and os.geteuid() == 0
    layout = Layout(run_dir / "shared")
    layout.make(checker=NOBODY if root else -1)
    env = {**kernel_env(work, threads=1, gpus=""), "GRADER_UMASK": "000"}

    async def go():
        async with executed(notebook(*cells), workdir=work, shared=layout.root, limits=LIMITS,
                            seed=0, env=env) as ex:
            if warm:
                return await warm_checks([checks / "test_it.py"], run_dir=run_dir,
                                         public_dir=tmp_path / "checks" / "public",
                                         hidden_dir=hidden, shared=layout.root,
                                         connection=ex.connection, sandboxed=sandboxed,
                                         why_no_kernel=f"nothing to check: {ex.reason}")
            return await run_checks(
                [checks / "test_it.py"], run_dir=run_dir, public_dir=tmp_path / "checks" / "public",
                hidden_dir=hidden, student_data=None, connection=ex.connection,
                shared=layout.root, limits=LIMITS, sandboxed=sandboxed, uid=NOBODY,
                why_no_kernel=f"nothing to check: {ex.reason}",
            )

    result = asyncio.run(go())
    assert result.problem == "", result.problem
    return {o.name: o for o in result.outcomes}


async def warm_checks(files: list[Path], *, run_dir: Path, public_dir: Path, hidden_dir: Path,
                      shared: Path, connection: dict, why_no_kernel: str, sandboxed: bool) -> Checks:
    """FILES' outcomes from a warm checker whose slot's folder holds RUN_DIR."""
    slot = CheckerSlot(folder=run_dir.parent, public_dir=public_dir, hidden_dir=hidden_dir,
                       student_data=None, limits=LIMITS, sandboxed=sandboxed, uid=NOBODY,
                       kernel_uids=())
    await slot.start()
    try:
        checker = await slot.begin(files, run_dir=run_dir, shared=shared, kernel_uid=-1)
        checks = await checker.finish(connection, why_no_kernel)
        checker.kill()
    finally:
        await slot.close()
    assert isinstance(checker, WarmChecker) and slot.why_cold == "", slot.why_cold
    return checks


CHECKS = '''
import numpy as np
import pytest


@pytest.mark.points(2)
def test_number(submission):
    """a is 3"""
    assert submission.number("a") == 3, f"a should be 3, found {submission.number('a')}"


@pytest.mark.points(1)
def test_array(submission):
    found = submission.array("v")
    assert found.dtype.kind == "f" and found.tolist() == [1.0, 2.0], f"v is {found.tolist()}"


@pytest.mark.points(1)
def test_call(submission, hidden):
    x = np.array([1.0, 2.0, int((hidden / "answer.txt").read_text())])
    assert submission.call_array("f", x).tolist() == [2.0, 4.0, 84.0], "f should double"


@pytest.mark.points(1)
def test_json(submission):
    assert submission.get("d") == {"k": [1, 2]}, "d should be {'k': [1, 2]}"


@pytest.mark.points(4)
def test_partial(submission, credit, feedback):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    feedback.figure(fig, "a plot")
    feedback.text("note", "well done")
    credit.tiers(submission.number("a"), [(5, 1.0), (3, 0.5)], "a")


def test_missing(submission):
    submission.number("nowhere")


def test_raises(submission):
    submission.call("broken")


def test_leak(submission, hidden):
    submission.call("leak", np.array([4242.0]))


def test_sneaky(submission):
    submission.call("sneaky", np.array([4242.0]))


def test_odd_type(submission):
    submission.call_array("odd", np.array([4242.0]))
'''


# Checks that need nothing but an ordinary notebook share one kernel and one checker run.
MESSAGES = '''

def test_secret(submission):
    SECRET_THRESHOLD = 0.123
    assert submission.number("a") > SECRET_THRESHOLD * 100, "a is too small"


def test_bare(submission):
    assert submission.number("a") > 1000


def test_eq(submission):
    assert submission.get("answer") == 42, "answer should be 42"


def test_arr(submission):
    assert submission.array("answer").tolist() == [42], "answer should be [42]"


def test_f(submission):
    pytest.fail("a should be 4")
'''
CELLS = ("import numpy as np\na = 3\nv = np.array([1.0, 2.0])\n"
         "d = {'k': [1, 2]}\ndef f(x):\n    return 2 * x\n"
         "def broken():\n    raise KeyError('oops')",
         "def leak(x):\n    raise ValueError(f'got {x}')\n"
         "def sneaky(x):\n    raise type(f'Got{int(x[0])}', (Exception,), {})()\n"
         "def odd(x):\n    return type(f'Got{int(x[0])}', (), {})()",
         "class Anything:\n    def __eq__(self, other):\n        return True\nanswer = Anything()")


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """The outcomes of CHECKS and MESSAGES on CELLS, graded once for the tests that read them."""
    return grade(tmp_path_factory.mktemp("shared-run"), CHECKS + MESSAGES, *CELLS)


@pytest.mark.slow
def test_values_calls_points_and_partial_credit(shared_run):
    out = shared_run
    assert {n: o.outcome for n, o in out.items()} == {
        "test_number": "passed", "test_array": "passed", "test_call": "passed",
        "test_json": "passed", "test_partial": "partial", "test_missing": "failed",
        "test_raises": "failed", "test_leak": "failed", "test_sneaky": "failed",
        "test_odd_type": "failed",
        # MESSAGES, asserted on by the tests below
        "test_secret": "failed", "test_bare": "failed", "test_eq": "failed", "test_arr": "failed",
        "test_f": "failed"}
    assert out["test_number"].points == 2 and out["test_number"].description == "a is 3"
    assert out["test_partial"].points == 2.0 and "50%" in out["test_partial"].message
    assert [a.kind for a in out["test_partial"].attachments] == ["image", "text"]
    assert out["test_missing"].message == "nowhere: NameError: name 'nowhere' is not defined"
    # A call's failure names the function and a well-known exception type, never the text or a
    # made-up type name, which could carry the checker's hidden inputs out.
    assert out["test_raises"].message.startswith("broken(...) raised KeyError when the checks")
    assert "oops" not in out["test_raises"].message
    assert out["test_leak"].message.startswith("leak(...) raised ValueError when the checks")
    assert out["test_sneaky"].message.startswith("sneaky(...) raised an exception when the checks")
    assert out["test_odd_type"].message == "odd(...) returned a value that cannot be handed to the checks"
    assert not any("4242" in o.message for o in out.values())
    assert out["test_missing"].max_points == 1 and not out["test_missing"].public


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory):
    """The outcomes of the same checks on the same cells, from a worker slot's warm checker."""
    return grade(tmp_path_factory.mktemp("warm-run"), CHECKS + MESSAGES, *CELLS, warm=True)


@pytest.mark.slow
def test_the_warm_checker_grades_as_a_checker_of_its_own(shared_run, warm_run):
    def seen(outcomes: dict) -> dict:
        return {name: (o.outcome, o.points, o.max_points, o.message, o.description, o.public,
                       o.fault, [(a.kind, a.title, a.content if a.kind == "text" else bool(a.content))
                                 for a in o.attachments])
                for name, o in outcomes.items()}

    assert len(warm_run) == 15 and seen(warm_run) == seen(shared_run)


@pytest.mark.slow
def test_failed_hidden_check_shows_the_message_not_the_code(shared_run):
    out = shared_run
    assert out["test_secret"].message == "a is too small"
    assert out["test_bare"].message == "the check failed"
    assert "SECRET" not in out["test_secret"].message + out["test_bare"].message


@pytest.mark.slow
def test_objects_that_equal_everything_do_not_pass(shared_run):
    out = shared_run
    assert out["test_eq"].outcome == "failed" and out["test_arr"].outcome == "failed"
    assert "cannot be handed to the checks" in out["test_eq"].message


@pytest.mark.slow
def test_fake_results_printed_or_written_by_the_student_do_not_count(tmp_path):
    source = 'def test_a(submission):\n    assert submission.number("a") == 3, "a should be 3"\n'
    fake = ('import json, pathlib\nprint(\'{"checks": [{"name": "test_a", "points": 100}]}\')\n'
            'for p in [pathlib.Path("..") / "shared" / "out", pathlib.Path("..") / "checks"]:\n'
            '    p.mkdir(exist_ok=True)\n'
            '    (p / "results.json").write_text(json.dumps({"checks": [{"name": "test_a",'
            ' "description": "", "public": False, "max_points": 100, "points": 100,'
            ' "outcome": "passed", "message": "", "attachments": []}]}))\n'
            'a = 4')
    out = grade(tmp_path, source, fake)
    assert out["test_a"].outcome == "failed" and out["test_a"].points == 0


@pytest.mark.slow
def test_a_swapped_in_symlink_is_not_followed(tmp_path):
    source = ('def test_link(submission):\n'
              '    assert submission.array("v").tolist() == [1], "v should be [1]"\n')
    trick = ('import os, numpy as np, builtins\n'
             'real_save = np.save\n'
             'def evil_save(path, arr, **kw):\n'
             '    os.symlink("/etc/passwd", path)\n'
             'np.save = evil_save\n'
             'v = np.array([1])')
    out = grade(tmp_path, source, trick)
    assert out["test_link"].outcome == "failed"
    assert "could not be read back" in out["test_link"].message


@pytest.mark.slow
def test_without_a_kernel_every_check_fails_with_the_reason(tmp_path):
    source = 'def test_a(submission):\n    submission.number("a")\n'
    out = grade(tmp_path, source, "a = 1", "import os\nos._exit(1)")
    assert out["test_a"].outcome == "failed"
    assert out["test_a"].message.startswith("nothing to check: the Python kernel died in code cell 2")


def test_partial_credit_tiers_both_ways():
    from grader.checks import Credit

    credit = Credit()
    credit.tiers(0.85, [(0.9, 1.0), (0.8, 0.5)], "accuracy")
    assert credit.fraction == 0.5 and "0.9 or more earns full points" in credit.message
    credit = Credit()
    credit.tiers(30.0, [(25, 1.0), (40, 0.25)], "test MSE", lower_is_better=True)
    assert credit.fraction == 0.25 and "25 or less earns full points" in credit.message
    credit = Credit()
    with pytest.raises(AssertionError, match="above 40 needed"):
        credit.tiers(50.0, [(25, 1.0), (40, 0.25)], "test MSE", lower_is_better=True)


@pytest.mark.slow
def test_pytest_fail_reads_like_an_assertion(shared_run):
    assert shared_run["test_f"].message == "a should be 4"


ISOLATION = '''
import os
import resource
import socket


def test_isolated(hidden):
    assert (os.getuid() != 0) == {root}, f"uid {{os.getuid()}}"
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == {address_space}, "no memory limit"
    import keras  # TensorFlow imports under the limit

    assert keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).count_params() == 3
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=2)
        raise AssertionError("connected to the host")
    except OSError:
        pass
    assert (hidden / "answer.txt").read_text() == "42"
    assert not os.path.exists("/etc/shadow") and not os.path.exists({gradebook!r})
'''


@pytest.mark.slow
@pytest.mark.parametrize("warm", [False, True], ids=["own", "warm"])
def test_the_checker_runs_unprivileged_offline_and_memory_limited(tmp_path, warm):
    import socket

    assert bwrap() is not None, "bubblewrap cannot make a sandbox here: apt-get install bubblewrap"
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0)
    gradebook = tmp_path / "gradebook.sqlite"
    gradebook.write_text("")
    source = ISOLATION.format(root=os.geteuid() == 0, port=server.getsockname()[1],
                              address_space=(2 * LIMITS.memory_mb + 4096) * 1024 * 1024,
                              gradebook=str(gradebook))
    out = grade(tmp_path, source, "a = 1", warm=warm)
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()
    assert out["test_isolated"].outcome == "passed", out["test_isolated"].message
