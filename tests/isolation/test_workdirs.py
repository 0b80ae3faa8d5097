"""Run folders: locked while their grader lives, removed after it dies, and the caps they carry."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.isolation import sandbox, workdirs
from grader.model.config import Limits
from tests.conftest import REPO

HOLDER = """
import sys, time
from pathlib import Path
from grader.isolation import workdirs
folder = workdirs.make(Path(sys.argv[1]))
folder.share(disk_mb=8)
print(folder.path, flush=True)
time.sleep(600)
"""


def mounted(path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_a_live_graders_folder_survives_the_sweep_and_a_dead_ones_goes(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert holder.stdout is not None
        path = Path(holder.stdout.readline().strip())
        assert workdirs.remove_stale(tmp_path) == [] and (path / "shared").is_dir()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert path.is_dir(), "a killed grader leaves its folder behind"
    assert workdirs.remove_stale(tmp_path) == [path]
    assert not path.exists() and not mounted(path / "shared")


def test_the_sweep_leaves_young_unlocked_folders_and_other_names_alone(tmp_path):
    young = tmp_path / "grader-abcd1234"  # an older grader's folder, without a lock, in use
    other = tmp_path / "grader-users"  # the user claims of graders running now
    old = tmp_path / "grader-old12345"
    for folder in (young, other, old):
        folder.mkdir()
    long_ago = time.time() - workdirs.LOCKLESS_AGE - 60
    os.utime(old, (long_ago, long_ago))
    assert workdirs.remove_stale(tmp_path) == [old]
    assert young.is_dir() and other.is_dir()


def test_making_a_folder_sweeps_its_work_root_once(tmp_path):
    dead = tmp_path / "grader-dead1234"
    dead.mkdir()
    (dead / ".lock").touch()  # a lock nobody holds
    folder = workdirs.make(tmp_path)
    assert not dead.exists() and folder.path.parent == tmp_path
    folder.remove()
    assert not folder.path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root mounts the capped tmpfs")
def test_the_shared_folder_is_capped_at_disk_mb(tmp_path):
    folder = workdirs.make(tmp_path)
    shared = folder.share(disk_mb=4)
    assert folder.capped and mounted(shared)
    written = 0
    with pytest.raises(OSError) as full:
        for i in range(100_000):  # many small files, as a notebook filling its exchange would
            (shared / f"junk{i}").write_bytes(b"x" * 4096)
            written += 4096
    assert full.value.errno == errno.ENOSPC and written <= 4 << 20
    folder.remove()
    assert not mounted(shared) and not folder.path.exists()


MEMFD = """
import os
written = 0
try:
    for i in range(40):  # each under RLIMIT_FSIZE, together well over the memory limit
        fd = os.memfd_create(f"hog{i}")
        for _ in range(10):
            os.write(fd, b"x" * (1 << 20) * 4)
            written += 4
except OSError as e:
    print("refused after", written, "MB", e)
else:
    print("WROTE", written, "MB")
"""

FORKS = """
import os, time
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print("stopped after", n, e.errno)
"""


# Eight busy processes for two seconds of wall time; how much CPU time they got in all.
HOG = """
import os, resource, time
began = time.monotonic()
for _ in range(8):
    if os.fork() == 0:
        while time.monotonic() - began < 2:
            pass
        os._exit(0)
for _ in range(8):
    os.wait()
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print("CPU", used.ru_utime + used.ru_stime, "WALL", time.monotonic() - began)
"""


def confined(tmp_path: Path, code: str, limits: Limits,
             cpus: float = 0.0) -> tuple[subprocess.CompletedProcess, workdirs.RunFolder]:
    folder = workdirs.make(tmp_path, cpus=cpus)
    shared = folder.share()
    shared.chmod(0o777)
    spec = sandbox.Spec(files={}, shared=shared, limits=limits, cgroups=folder.confine(limits))
    argv = sandbox.command([sys.executable, "-c", code], spec)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120), folder


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes cgroups")
def test_memory_no_process_maps_counts_against_memory_mb(tmp_path):
    ran, folder = confined(tmp_path, MEMFD, Limits(memory_mb=256))
    try:
        assert folder.cgroups, "no cgroup could be made on this machine"
        assert "WROTE" not in ran.stdout, ran.stdout
        killed = ran.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)  # bwrap passes it on as 137
        assert killed or "refused" in ran.stdout, (ran.returncode, ran.stdout)
    finally:
        folder.remove()
    assert not any(group.exists() for group in folder.cgroups)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes cgroups")
def test_processes_stop_at_the_pids_limit(tmp_path):
    ran, folder = confined(tmp_path, FORKS, Limits(processes=20))
    try:
        assert "stopped after" in ran.stdout, ran.stdout + ran.stderr[-2000:]
        assert int(ran.stdout.split()[2]) < 20 and ran.stdout.split()[3] == str(errno.EAGAIN)
    finally:
        folder.remove()
    assert not any(group.exists() for group in folder.cgroups)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes cgroups")
def test_busy_processes_get_no_more_than_the_runs_share_of_the_cores(tmp_path):
    ran, folder = confined(tmp_path, HOG, Limits(), cpus=0.25)
    try:
        quota = [g for g in folder.cgroups if (g / "cpu.cfs_quota_us").exists() or (g / "cpu.max").exists()]
        assert quota, f"no CPU quota among the run's cgroups {folder.cgroups}"
        held = (quota[0] / "cpu.max").read_text().split() if (quota[0] / "cpu.max").exists() else [
            (quota[0] / name).read_text().strip() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")]
        assert held == ["25000", "100000"]
        words = ran.stdout.split()
        assert words[:1] == ["CPU"], ran.stdout + ran.stderr[-2000:]
        cpu, wall = float(words[1]), float(words[3])
        # a quarter of a core over the wall time, and a period's slack; unquoted, 8 processes
        # take every core they can get (2 s each on an idle machine)
        assert cpu <= 0.25 * wall + 0.2, (cpu, wall)
    finally:
        folder.remove()
    assert not any(group.exists() for group in folder.cgroups)
    assert workdirs.held_limits() == ["memory", "pids", "cpu"]  # what `grader doctor` says
