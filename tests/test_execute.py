"""Running notebooks in a real kernel: errors, limits, death, outputs, seeds."""

import asyncio
from pathlib import Path

from grader.config import Limits
from grader.execute import executed, kernel_env
from tests.conftest import notebook

LIMITS = Limits(cell_seconds=4, total_seconds=20, kernel_start_seconds=30, output_bytes=50_000)


def run(tmp_path: Path, *sources: str, limits: Limits = LIMITS):
    """Execute the cells; return the Execution, whether the kernel answered, and its value of x."""
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)

    async def go():
        async with executed(notebook(*sources), workdir=work, shared=tmp_path, limits=limits,
                            seed=3, env=kernel_env(work, threads=1, gpus="")) as ex:
            return ex, ex.connection_file is not None

    return asyncio.run(go())


def test_clean_run_keeps_outputs_and_the_kernel_up(tmp_path):
    ex, alive = run(tmp_path, "print('hello')", "x = 2")
    assert ex.status == "ok" and ex.reason == "" and alive
    assert ex.notebook.cells[0].outputs[0]["text"] == "hello\n"
    assert ex.kernel_start_s > 0 and ex.execution_s > 0


def test_error_reply_fails_the_cell_and_later_cells_still_run(tmp_path):
    ex, _ = run(tmp_path, "x = 1", "raise ValueError('boom')", "print('after')")
    assert ex.status == "cell_error"
    assert ex.reason == "cell 2 raised ValueError: boom"
    assert ex.failed_cell.index == 1 and "ValueError" in ex.failed_cell.traceback
    assert ex.notebook.cells[2].outputs[0]["text"] == "after\n"


def test_silenced_tracebacks_still_count_as_failures(tmp_path):
    ex, _ = run(tmp_path, "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                          "ip._showtraceback = lambda *a, **k: None",
                "1 / 0")
    assert ex.status == "cell_error" and ex.failed_cell.ename == "ZeroDivisionError"


def test_error_looking_output_without_an_error_is_not_a_failure(tmp_path):
    ex, _ = run(tmp_path, "import sys\nprint('Traceback (most recent call last):', file=sys.stderr)\n"
                          "from IPython.display import display\n"
                          "display({'application/vnd.jupyter.error': 'x'}, raw=True)")
    assert ex.status == "ok"


def test_cell_timeout_stops_the_notebook_but_keeps_the_kernel(tmp_path):
    ex, alive = run(tmp_path, "x = 1", "while True:\n    pass", "y = 2")
    assert ex.status == "timeout" and "cell 2 ran longer than 4 s" in ex.reason
    assert alive
    assert ex.notebook.cells[2].get("outputs") == []


def test_total_limit_applies_across_cells(tmp_path):
    limits = Limits(cell_seconds=30, total_seconds=3, kernel_start_seconds=30)
    ex, _ = run(tmp_path, "import time\ntime.sleep(2)", "time.sleep(2)", "z = 1", limits=limits)
    assert ex.status == "timeout" and "total limit of 3 s" in ex.reason


def test_a_kernel_that_exits_is_a_result_not_a_crash(tmp_path):
    ex, alive = run(tmp_path, "x = 1", "import os\nos._exit(0)", "y = 2")
    assert ex.status == "kernel_died" and "kernel died in cell 2" in ex.reason and not alive


def test_outputs_are_capped(tmp_path):
    ex, _ = run(tmp_path, "for i in range(20000):\n    print('spam' * 10)", "print('late')")
    assert ex.output_truncated
    kept = sum(len(o.get("text", "")) for c in ex.notebook.cells for o in c.get("outputs", []))
    assert kept < 60_000


def test_seeds_make_runs_reproduce(tmp_path):
    code = "import random, numpy as np\nprint(random.random(), np.random.rand())"
    first, _ = run(tmp_path / "a", code)
    second, _ = run(tmp_path / "b", code)
    text = first.notebook.cells[0].outputs[0]["text"]
    assert text == second.notebook.cells[0].outputs[0]["text"]
    assert len(text.split()) == 2


def test_the_kernel_sees_none_of_the_graders_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_SECRET_DB_URL", "postgres://secret")
    ex, _ = run(tmp_path, "import os\nprint(sorted(k for k in os.environ if 'SECRET' in k))\n"
                          "print(os.getcwd())")
    out = ex.notebook.cells[0].outputs[0]["text"]
    assert out.splitlines()[0] == "[]"
    assert out.splitlines()[1].endswith("/work")
