"""The sandbox's shape, and what the grader does where none can be made."""

import json
import os
import subprocess
import sys
from pathlib import Path

from grader import sandbox
from grader.config import Limits
from tests.conftest import REPO, TINY_SOLUTION


def test_the_sandbox_binds_only_python_the_work_and_the_shared_folder(tmp_path):
    shared = tmp_path / "shared"
    data = tmp_path / "data.npz"
    argv = sandbox.command(["python"], sandbox.Spec(files={"data.npz": data}, shared=shared,
                                                    limits=Limits(disk_mb=64)))
    sources = {argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")}
    writable = [argv[i + 2] for i, a in enumerate(argv) if a == "--bind"]
    assert writable == [str(shared)]
    assert str(data) in sources and str(REPO) not in sources and "/" not in sources
    assert not any(s.startswith(str(Path.home())) and "pyenv" not in s for s in sources)
    assert "--unshare-net" in argv and "--unshare-pid" in argv and "--die-with-parent" in argv
    assert str(64 * 1024 * 1024) in argv
    assert argv[-1] == "python"


def test_limits_reach_the_kernel_as_rlimits():
    limits = Limits(memory_mb=100, disk_mb=10, processes=7, open_files=50, total_seconds=10)
    values = json.loads(sandbox.rlimits(limits))
    assert values["AS"] == 100 << 20 and values["FSIZE"] == 10 << 20
    assert values["NPROC"] == 7 and values["NOFILE"] == 50 and values["CORE"] == 0


def grader(course, *args, env=None):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args), "--course", str(course)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=course)


def test_without_a_sandbox_the_grader_refuses_unless_told(course, write_notebook, tmp_path):
    subs = tmp_path / "subs"
    write_notebook(subs, "alice", *TINY_SOLUTION)
    bin_dir = tmp_path / "bin"  # a PATH with Python but no bwrap
    bin_dir.mkdir()
    env = {**os.environ, "PATH": str(bin_dir)}
    refused = grader(course, "run", "tiny", "--submissions", subs, env=env)
    assert refused.returncode == 2 and "cannot isolate" in refused.stderr and "--no-sandbox" in refused.stderr
    assert refused.stderr.count("\n") == 1
    ran = grader(course, "run", "tiny", "--submissions", subs, "--no-sandbox", env=env)
    assert ran.returncode == 0, ran.stderr
    page = (course / "reports" / "tiny" / "alice.html").read_text()
    assert "not isolated" not in page and "6 / 6" in page, "a staff message, not the student's"
    assert "not isolated" in (course / "reports" / "tiny" / "index.html").read_text()


def test_sandboxed_reports_do_not_warn(course, write_notebook, tmp_path):
    subs = tmp_path / "subs"
    write_notebook(subs, "alice", *TINY_SOLUTION)
    ran = grader(course, "run", "tiny", "--submissions", subs)
    assert ran.returncode == 0, ran.stderr
    assert "not isolated" not in (course / "reports" / "tiny" / "alice.html").read_text()


def test_each_claim_gets_a_user_no_other_grader_holds():
    first, second = sandbox.claim_user(), sandbox.claim_user()
    other = subprocess.run([sys.executable, "-c", "from grader import sandbox; print(sandbox.claim_user())"],
                           capture_output=True, text=True, check=True, cwd=REPO)
    assert len({first, second, int(other.stdout)}) == 3
