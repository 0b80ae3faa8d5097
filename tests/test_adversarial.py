# ruff: noqa: E501
"""Hostile notebooks, graded in one sandboxed batch beside assignment01's reference.

Each attack is a small notebook. The batch must grade every one of them to a stored result, the
reference must keep full marks, and each test below checks that what its attack tried did not
happen, from the outside (the host's files, a listening socket) where it can, and from the
attack's own printed evidence otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

import nbformat
import pytest

from grader.data.prepare import prepare
from grader.grading.batch import grade_batch
from grader.grading.executor import Settings
from grader.isolation.sandbox import bwrap, python_roots
from grader.model.assignments import load_assignment
from grader.model.submission import discover
from grader.store.gradebook import Gradebook
from tests.conftest import REPO, notebook

# assignment01's reference gets every point of the checks; its written answer's point is the
# staff's (the rubric's), given later in `grader review`
FULL = load_assignment(REPO, "assignment01").config.check_points

ATTACKS: dict[str, list[str]] = {
    "tcp": ["import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "    print('CONNECTED')\nexcept OSError as e:\n    print('blocked', e)"],
    "dns": ["import socket\nfor host in ('pypi.org', 'localhost.localdomain', 'example.com'):\n"
            "    try:\n        print('RESOLVED', socket.getaddrinfo(host, 80)[0][4])\n"
            "    except OSError as e:\n        print('blocked', e)"],
    "read_secrets": ["import glob\nfor pattern in {secrets!r}:\n    for path in glob.glob(pattern, recursive=True) or [pattern]:\n"
                     "        try:\n            data = open(path, 'rb').read(64)\n"
                     "            print('LEAKED', path, data[:20])\n"
                     "        except OSError as e:\n            print('blocked', path, type(e).__name__)"],
    "write_outside": ["import os\nfor path in {targets!r}:\n    try:\n"
                      "        open(path, 'w').write('pwned')\n        print('WROTE', path)\n"
                      "    except OSError as e:\n        print('blocked', path, type(e).__name__)"],
    "fork_bomb": ["import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
                  "            import time\n            time.sleep(600)\n            os._exit(0)\n"
                  "        n += 1\nexcept OSError as e:\n    print('stopped after', n, type(e).__name__)"],
    "memory_bomb": ["hog = []\ntry:\n    while True:\n        hog.append(bytearray(256 * 1024 * 1024))\n"
                    "except MemoryError:\n    print('stopped at', len(hog) * 256, 'MB')\n    hog = None"],
    "infinite_loop": ["while True:\n    pass"],
    "busy_threads": ["import threading\ndef spin():\n    while True:\n        pass\n"
                     "for _ in range(8):\n    threading.Thread(target=spin, daemon=True).start()",
                     "import time\ntime.sleep(3600)"],
    # Sixty busy processes, a session each (no autogroup of the scheduler holds them together),
    # for fifteen seconds: held to the slot's share of the cores, they slow no one else.
    "cpu_hog": ["import os, time\nbegan = time.monotonic()\nfor _ in range(60):\n    if os.fork() == 0:\n"
                "        os.setsid()\n        while time.monotonic() - began < 15:\n            pass\n"
                "        os._exit(0)\nfor _ in range(60):\n    os.wait()\nprint('spun')"],
    "fill_disk": ["import os\nwritten = 0\ntry:\n    for i in range(100000):\n"
                  "        with open(f'junk{{i}}.bin', 'wb') as f:\n            for _ in range(16):\n"
                  "                f.write(b'x' * (4 << 20))\n                written += 4\n"
                  "except OSError as e:\n    print('stopped after', written, 'MB', type(e).__name__)"],
    "exit_first": ["import os\nos._exit(0)", "means = 1"],
    "kill_parent": ["import os, signal\nfor pid in {{os.getppid(), 1, int(os.environ.get('GRADER_PARENT_PID', 1))}}:\n"
                    "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n"
                    "        print('could not kill', pid, e)"],
    "setsid_survivor": ["import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {survivor!r}],"
                        " start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
                        "print('spawned')"],
    "monkeypatch": ["import numpy as np\nimport keras\nnp.allclose = lambda *a, **k: True\n"
                    "np.array_equal = lambda *a, **k: True\nkeras.Model.predict = lambda self, x, **k: x\n"
                    "means = minimums = maximums = 'patched'\naccuracy = 'patched'"],
    "fake_results": ["import json, os, pathlib\nfake = {{'checks': [{{'name': 'test_statistics', 'description': '',"
                     " 'public': True, 'max_points': 10, 'points': 10, 'outcome': 'passed', 'message': '',"
                     " 'attachments': []}}]}}\nfor folder in ['.', '..', '/tmp', os.environ.get('HOME', '.')]:\n"
                     "    try:\n        pathlib.Path(folder, 'results.json').write_text(json.dumps(fake))\n"
                     "    except OSError:\n        pass\n"
                     "print('Score: 10/10')\nprint(json.dumps(fake))"],
    "syscalls": ["import ctypes, errno, json, platform, subprocess\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "arm = platform.machine() == 'aarch64'\ndef call(x86, aarch64, *args):\n    ctypes.set_errno(0)\n"
                 "    failed = libc.syscall(aarch64 if arm else x86, *args) < 0\n"
                 "    return errno.errorcode.get(ctypes.get_errno(), '?') if failed else 'ALLOWED'\n"
                 "print(json.dumps({{'unshare_user': call(272, 97, 0x10000000), 'unshare_mount': call(272, 97, 0x20000),"
                 " 'clone_user': call(56, 220, 0x10000000 | 17, 0, 0, 0, 0), 'clone3': call(435, 435, 0, 0),"
                 " 'setns': call(308, 268, 0, 0), 'keyctl': call(250, 219, 0, 0), 'add_key': call(248, 217, 0, 0, 0, 0, 0),"
                 " 'request_key': call(249, 218, 0, 0, 0, 0), 'bpf': call(321, 280, 0, 0, 0),"
                 " 'io_uring_setup': call(425, 425, 1, 0), 'userfaultfd': call(323, 282, 0),"
                 " 'perf_event_open': call(298, 241, 0, 0, -1, -1, 0), 'ptrace': call(101, 117, 0, 0, 0, 0),"
                 " 'unshare_command': subprocess.run(['unshare', '--user', '--map-root-user', 'true'],"
                 " capture_output=True).returncode}}))"],
    "fill_shared": ["import errno, os\nfrom ipykernel.connect import get_connection_file\n"
                    "shared = os.path.dirname(get_connection_file())\nn = 0\ntry:\n"
                    "    while n < 40000:  # 640 MB, over the 256 MB cap, should the cap fail\n"
                    "        with open(os.path.join(shared, f'junk{{n}}'), 'wb') as f:\n"
                    "            f.write(b'x' * 16384)\n        n += 1\n    print('WROTE', n * 16 // 1024, 'MB')\n"
                    "except OSError as e:\n    print('stopped after', n * 16 // 1024, 'MB', errno.errorcode[e.errno])\n"
                    "for i in range(n + 1):\n    try:\n        os.remove(os.path.join(shared, f'junk{{i}}'))\n"
                    "    except OSError:\n        pass"],
    "memfd": ["import os\nchunk, written = b'x' * (8 << 20), 0\ntry:\n    for i in range(24):  # 4.8 GB, over memory_mb\n"
              "        fd = os.memfd_create(f'hog{{i}}')\n        for _ in range(25):\n"
              "            os.write(fd, chunk)\n            written += 8\n        print('at', written, 'MB', flush=True)\n"
              "    print('WROTE', written, 'MB')\nexcept OSError as e:\n    print('refused after', written, 'MB', e)"],
    "sysv_shm": ["import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]\n"
                 "libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]\nlibc.shmat.restype = ctypes.c_void_p\n"
                 "libc.shmdt.argtypes = [ctypes.c_void_p]\nsize, total = 200 << 20, 0\n"
                 "for i in range(24):  # 4.8 GB, over memory_mb, each segment detached after filling\n"
                 "    segment = libc.shmget(0, size, 0o1000 | 0o600)\n"
                 "    address = libc.shmat(segment, None, 0) if segment >= 0 else None\n"
                 "    if address in (None, ctypes.c_void_p(-1).value):\n"
                 "        print('refused after', total, 'MB', ctypes.get_errno())\n        break\n"
                 "    ctypes.memset(address, 1, size)\n    libc.shmdt(address)\n    total += 200\n    print('at', total, 'MB', flush=True)\n"
                 "else:\n    print('WROTE', total, 'MB')"],
    "dev_shm": ["chunk, written = b'x' * (8 << 20), 0\ntry:\n    for i in range(24):  # 4.8 GB into the sandbox's /dev/shm\n"
                "        with open(f'/dev/shm/hog{{i}}', 'wb') as f:\n            for _ in range(25):\n"
                "                f.write(chunk)\n                written += 8\n"
                "    print('WROTE', written, 'MB')\nexcept OSError as e:\n    print('refused after', written, 'MB', e)"],
    "mountinfo": ["print(open('/proc/self/mountinfo').read())"],
    "flood_output": ["import sys\nchunk = 'x' * 1_000_000 + '\\n'\nfor _ in range(100):\n    sys.stdout.write(chunk)",
                     "after = 'still running'"],
    "flood_display": ["from IPython.display import display, clear_output\nfrom comm import create_comm\n"
                      "h = display('start', display_id=True)\nc = create_comm(target_name='junk')\n"
                      "for i in range(40):\n    h.update('y' * 1_000_000)\n"
                      "    c.send({{'state': {{f'k{{i}}': 'z' * 1_000_000}}}})\n"
                      "for _ in range(5000):\n    clear_output()",
                      "print('still running')"],
    # Replace the folders the checker reads from and writes hidden rows into with links to a
    # folder of the student's choice; then offer predict_grades so the checker sends those rows.
    "swap_exchange": ["import os, sys\nsock = os.path.dirname(sys.argv[sys.argv.index('-f') + 1])\n"
                      "shared = os.path.dirname(sock)\nfor name in ('in', 'out', 'sock'):\n"
                      "    path = os.path.join(shared, name)\n    try:\n"
                      "        os.rename(path, path + '.old')\n        os.symlink({outside!r}, path)\n"
                      "        print('SWAPPED', name)\n    except OSError as e:\n"
                      "        print('blocked', name, type(e).__name__)\n"
                      "for path in (os.path.join(shared, 'new'), os.path.join(shared, 'in', 'x.npy')):\n"
                      "    try:\n        os.symlink({outside!r}, path)\n        print('SWAPPED', path)\n"
                      "    except OSError as e:\n        print('blocked', path, type(e).__name__)",
                      "import numpy as np, keras\nmodel = keras.Sequential([keras.Input((3,)),"
                      " keras.layers.Dense(4, activation='relu'), keras.layers.Dense(1)])\n"
                      "def predict_grades(x):\n    return np.full(len(x), 7.0)"],
    # Send the checker to a TCP listener by rewriting the connection file.
    "kernel_json": ["import json, sys\npath = sys.argv[sys.argv.index('-f') + 1]\ninfo = json.load(open(path))\n"
                    "info.update(transport='tcp', ip='127.0.0.1', shell_port={port}, iopub_port={port},"
                    " stdin_port={port}, control_port={port}, hb_port={port})\njson.dump(info, open(path, 'w'))\n"
                    "means = 'rewritten'\nprint('rewrote', path)"],
    # A FIFO where the checker expects the array: a blocking open would hang the checker.
    "fifo": ["import os, numpy as np\ndef fifo_save(path, array, **kwargs):\n    os.mkfifo(path)\n"
             "means = np.array([1.0, 2.0, 3.0])\nnp.save = fifo_save"],
    # A .keras archive that unpacks to 320 MB of zeros (the same trick scales to 13 GB).
    "zip_bomb": ["import zipfile, keras\ndef bomb(self, path, *args, **kwargs):\n"
                 "    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:\n"
                 "        with z.open('model.weights.h5', 'w', force_zip64=True) as f:\n"
                 "            for _ in range(5):\n                f.write(bytes(64 << 20))\n"
                 "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\nkeras.Model.save = bomb"],
    # A model built on 2 inputs where the checks give 3: its predict raises in the trusted checks.
    "two_inputs": ["import numpy as np, keras\nmodel = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n"
                   "model.layers[-1].set_weights([np.ones((2, 1)), np.ones(1)])"],
    # Messages no Jupyter kernel sends: a status without execution_state, an HTML execution_count,
    # a display whose transient is no object, frames that are no message.
    "protocol": ["k = get_ipython().kernel\ndef send(kind, content):\n"
                 "    k.session.send(k.iopub_socket, kind, content, parent=k.get_parent())\n"
                 "send('status', {{}})\nsend('execute_input', {{'code': 'x', 'execution_count': '<b>7</b>'}})\n"
                 "send('display_data', {{'data': {{'text/plain': 'x'}}, 'metadata': {{}}, 'transient': 'id'}})\n"
                 "k.iopub_socket.send_multipart([b'not', b'a', b'message'])\nprint('after')", "means = 1"],
    # 1,000 outputs of one display id, each update rewriting all of them (1 GB a time): stopped.
    "flood_rewrites": ["from IPython.display import display\nfor i in range(1000):\n    display('s', display_id='d')\n"
                       "h = display('s', display_id='d')\nfor i in range(20):\n    h.update('y' * 1_000_000)",
                       "print('still running')"],
    # json.dump patched: every value the kernel hands the checks is a History of forged type.
    "forged_meta": ["import json\nreal = json.dump\ndef forged(obj, f, *args, **kwargs):\n"
                    "    if isinstance(obj, dict) and 'kind' in obj:\n"
                    "        obj = {{'kind': 'history', 'type': 'History', 'value': 5}}\n"
                    "    return real(obj, f, *args, **kwargs)\njson.dump = forged\nhistory = means = accuracy = 0.5"],
    # 40 widget messages of 50 MB: the kernel is stopped past 100 times the output cap.
    "flood_comm": ["from comm import create_comm\nc = create_comm(target_name='junk')\n"
                   "for i in range(40):\n    c.send({{'state': {{'k': 'z' * 50_000_000}}}})",
                   "print('still running')"],
    # A 6 KB .keras whose weights file declares a 1.6 GB array it never stores (read as zeros: 5.9 GB).
    "unstored_weights": ["import io, zipfile, h5py, keras\nsave = keras.Model.save\n"
                         "def forged(self, path, *args, **kwargs):\n    save(self, path, *args, **kwargs)\n"
                         "    with zipfile.ZipFile(path) as z:\n        members = dict((n, z.read(n)) for n in z.namelist())\n"
                         "    buffer = io.BytesIO()\n    with h5py.File(buffer, 'w') as f:\n"
                         "        f.create_dataset('layers/dense/vars/0', shape=(20000, 20000), dtype='float32')\n"
                         "    members['model.weights.h5'] = buffer.getvalue()\n"
                         "    with zipfile.ZipFile(path, 'w') as z:\n        for n, data in members.items():\n"
                         "            z.writestr(n, data)\n"
                         "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\nkeras.Model.save = forged"],
}

# What each attack must end as: its cells ran (graded), or the limit it hit.
EXPECTED = {name: {"graded"} for name in ATTACKS} | {
    "fork_bomb": {"graded", "timeout", "kernel_died"}, "memory_bomb": {"graded", "kernel_died"},
    "infinite_loop": {"timeout"}, "busy_threads": {"timeout"}, "exit_first": {"kernel_died"},
    "kill_parent": {"graded", "kernel_died"},
    "flood_comm": {"kernel_died"}, "flood_rewrites": {"kernel_died"},
    # Memory no process maps: killed at the cgroup's cap, refused, or out of time on a busy machine.
    **{name: {"graded", "kernel_died", "timeout"} for name in ("memfd", "sysv_shm", "dev_shm")},
}

SURVIVOR = """
import glob, os, time
deadline = time.time() + 120
while time.time() < deadline:
    for folder in ['/home/student/work', *glob.glob('/tmp/grader-*/shared'), *glob.glob('/tmp/grader-*/work')]:
        try:
            open(os.path.join(folder, 'poison.txt'), 'w').write('poison')
        except OSError:
            pass
    time.sleep(0.2)
"""


class Listener:
    """A TCP server on the host's loopback that records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connected = False
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connected = True
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Grade every attack, some hostile student ids and the reference in one batch."""
    if bwrap() is None:
        pytest.fail("bubblewrap cannot make a sandbox here: `apt-get install -y bubblewrap`")
    # right under /tmp: the kernels' sockets live under root/work, and a deeper tmp_path (a pytest
    # worker's, say) would leave them too little room (grader.isolation.workdirs.check_room)
    root = Path(tempfile.mkdtemp(prefix="adv-", dir="/tmp"))
    course = root / "course"
    (course / "assignments").mkdir(parents=True)
    shutil.copytree(REPO / "datasets", course / "datasets")
    target = course / "assignments" / "assignment01"
    shutil.copytree(REPO / "assignments" / "assignment01", target)
    toml = target / "assignment.toml"
    toml.write_text(toml.read_text().replace("cell_seconds = 60", "cell_seconds = 25")
                    .replace("memory_mb = 4096", "memory_mb = 4096\ndisk_mb = 256\nprocesses = 200"))
    data_home = root / "data"
    gradebook = root / "gradebook.sqlite"
    gradebook.write_text("")
    listener = Listener()
    outside = root / "outside"
    outside.mkdir()
    secrets = ["/etc/shadow", str(REPO / "assignments" / "*" / "checks" / "hidden" / "*.py"),
               str(course / "assignments" / "*" / "checks" / "**" / "*.py"),
               str(data_home / "prepared" / "*" / "hidden" / "*"), str(gradebook),
               str(Path.home() / ".bash_history"), "/proc/1/environ"]
    targets = [str(outside / "pwned.txt"), str(REPO / "pwned.txt"), "/etc/pwned", "/usr/pwned"]
    subs = root / "submissions"
    subs.mkdir()
    for name, cells in ATTACKS.items():
        sources = [c.format(port=listener.port, secrets=secrets, targets=targets, survivor=SURVIVOR,
                            outside=str(outside)) for c in cells]
        nbformat.write(notebook(*sources), subs / f"{name}.ipynb")
    shutil.copy(REPO / "assignments" / "assignment01" / "submissions" / "reference.ipynb",
                subs / "reference.ipynb")
    shutil.copy(REPO / "assignments" / "assignment01" / "submissions" / "reference.ipynb",
                subs / "zz-after-survivor.ipynb")
    hostile = ["evil\nname", "\x1b[31mred", "ø-ünïcode", "x" * 200, "-rf --force", "a;b|c&d", "...",
               "[red]markup", "x\\..\\..\\rt-evil"]
    for i, name in enumerate(hostile):
        nbformat.write(notebook(f"means = {i}"), subs / f"{name}.ipynb")
    # rich markup and escape sequences (OSC, RIS) in the reason a staff terminal shows
    nbformat.write(notebook("raise ValueError('[/x] \\x1b]0;owned\\x07 \\x1bc')"), subs / "[red]markup.ipynb")
    (subs / "with..dots").mkdir()
    nbformat.write(notebook("means = 9"), subs / "with..dots" / "../../escape.ipynb".replace("/", "_"))
    (subs / "huge.ipynb").write_text(json.dumps({"cells": [], "junk": "x" * 50_000_000}))
    (subs / "empty.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": [
        {"cell_type": "code", "input": "print('old format')", "language": "python", "outputs": [],
         "metadata": {}}], "metadata": {}}]}
    (subs / "format3.ipynb").write_text(json.dumps(v3))
    (subs / "notjson.ipynb").write_text("definitely { not json")
    for i in range(4):  # a lone surrogate in a source, first in line: the batch still runs
        surrogate = json.loads(nbformat.writes(notebook("means = 1")))
        surrogate["cells"][0]["source"] = "means = '\ud800'"
        (subs / f"!surrogate{i}.ipynb").write_text(json.dumps(surrogate))
    deep = json.loads(nbformat.writes(notebook("means = 1")))
    deep["metadata"]["deep"] = "DEEP"  # metadata nested 100,000 levels deep
    (subs / "deep.ipynb").write_text(json.dumps(deep).replace('"DEEP"', "[" * 100_000 + "]" * 100_000))
    assignment = load_assignment(course, "assignment01")
    prepared = prepare("grading", course=course, data_home=data_home)
    book = Gradebook(gradebook)
    submissions = discover(subs, notebook_name="assignment01.ipynb")
    Path("/proc/self/clear_refs").write_text("5")  # peak memory counts from here (VmHWM)
    start_mb = int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) // 1024
    result = grade_batch(assignment, submissions, gradebook=book, prepared=prepared,
                         settings=Settings(workers=2, reports=root / "reports",
                                           work_root=root / "work"))
    peak_mb = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) // 1024
    listener.close()
    stored = {r.student: r for r in book.latest("assignment01")}
    yield {"stored": stored, "listener": listener, "outside": outside, "submissions": submissions,
           "batch": result, "root": root, "grew_mb": peak_mb - start_mb}
    for path in targets:
        Path(path).unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)


def output(result) -> str:
    nb = nbformat.reads(result.executed_notebook, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_the_whole_batch_grades_and_the_reference_keeps_full_marks(batch):
    stored = batch["stored"]
    assert len(stored) == len(batch["submissions"]) == len(batch["batch"].graded)
    assert stored["reference"].score == FULL, stored["reference"].checks
    assert stored["zz-after-survivor"].score == FULL
    assert all(r.sandboxed for r in stored.values())
    assert all(r.status != "error" for r in stored.values()), {  # no attack passes for a grader fault
        s: r.staff_detail for s, r in stored.items() if r.status == "error"}
    for name in ATTACKS:
        result = stored[name]
        assert result.score == 0, (name, [(c.name, c.points) for c in result.checks])
        assert result.status in EXPECTED[name], (name, result.status, result.reason)
        assert (result.reason == "") == (result.status == "graded"), (name, result.reason)


@pytest.mark.slow
def test_no_network(batch):
    assert not batch["listener"].connected
    assert "CONNECTED" not in output(batch["stored"]["tcp"]) and "blocked" in output(batch["stored"]["tcp"])
    assert "RESOLVED" not in output(batch["stored"]["dns"]) and "blocked" in output(batch["stored"]["dns"])


@pytest.mark.slow
def test_no_reading_secrets_checks_hidden_data_or_gradebook(batch):
    text = output(batch["stored"]["read_secrets"])
    assert "LEAKED" not in text and text.count("blocked") >= 6, text


@pytest.mark.slow
def test_no_writing_outside_the_working_directory(batch):
    text = output(batch["stored"]["write_outside"])
    assert "WROTE" not in text and text.count("blocked") == 4, text
    assert not (batch["outside"] / "pwned.txt").exists() and not (REPO / "pwned.txt").exists()


@pytest.mark.slow
def test_fork_and_memory_bombs_are_stopped(batch):
    fork = batch["stored"]["fork_bomb"]
    assert fork.checks_s < 150, fork.checks_s  # an unanswering kernel costs one request timeout
    assert "stopped after" in output(fork) or fork.status in ("timeout", "kernel_died"), output(fork)
    memory = batch["stored"]["memory_bomb"]
    assert "stopped at" in output(memory) or memory.status == "kernel_died"


@pytest.mark.slow
def test_loops_and_busy_threads_hit_the_time_limit(batch):
    for name in ("infinite_loop", "busy_threads"):
        assert batch["stored"][name].status == "timeout", batch["stored"][name].reason
        assert batch["stored"][name].execution_s < 60


@pytest.mark.slow
def test_filling_the_disk_stops_at_the_cap(batch):
    text = output(batch["stored"]["fill_disk"])
    assert "stopped after" in text, text
    assert int(text.split("stopped after")[1].split()[0]) <= 300


@pytest.mark.slow
def test_exiting_or_killing_the_parent_only_ends_that_kernel(batch):
    assert batch["stored"]["exit_first"].status == "kernel_died"
    assert batch["stored"]["kill_parent"].status in ("kernel_died", "graded")


@pytest.mark.slow
def test_a_setsid_survivor_dies_with_its_sandbox(batch):
    assert "spawned" in output(batch["stored"]["setsid_survivor"])
    later = batch["stored"]["zz-after-survivor"]
    assert later.score == FULL and "poison" not in output(later)
    assert not list(batch["root"].rglob("poison.txt"))


@pytest.mark.slow
def test_monkeypatching_and_fake_results_change_nothing(batch):
    real = {c.name for c in batch["stored"]["reference"].checks}
    for name in ("monkeypatch", "fake_results"):
        result = batch["stored"][name]
        assert result.score == 0 and all(c.points == 0 for c in result.checks), name
        assert {c.name for c in result.checks} == real, name  # the checker's own outcomes
    assert "Score: 10/10" in output(batch["stored"]["fake_results"])  # the attack did run
    assert not list(batch["root"].rglob("results.json"))  # nothing it wrote reached the host


@pytest.mark.slow
def test_huge_output_is_capped_and_the_notebook_goes_on(batch):
    flood = batch["stored"]["flood_output"]
    assert flood.status == "graded" and len(flood.executed_notebook) < 3_000_000


@pytest.mark.slow
def test_bad_files_and_hostile_ids_end_as_results(batch):
    stored = batch["stored"]
    assert "50 MB" in stored["huge"].reason and stored["huge"].status == "invalid"
    assert stored["empty"].status == "invalid" and "no code" in stored["empty"].reason
    assert stored["notjson"].status == "invalid"
    assert stored["format3"].status == "graded" and stored["format3"].score == 0  # upgraded and ran
    assert "old format" in output(stored["format3"])
    ids = set(stored)
    assert {"evil?name", "?[31mred", "ø-ünïcode", "-rf --force", "a;b|c&d", "with..dots"} <= ids, ids
    assert any(len(s) <= 100 and s.startswith("xxxx") for s in ids)
    pages = {p.name for p in (batch["root"] / "reports").iterdir() if not p.name.endswith("~notebook.html")}
    assert all(p.isprintable() and "/" not in p for p in pages)
    assert len(pages) == len(stored)


@pytest.mark.slow
def test_hostile_ids_are_plain_on_a_terminal_and_slugged_in_the_feedback_zip(batch):
    """'[red]' and '[/x]' are no rich markup (grader run's table ends in no MarkupError) and no
    escape sequence reaches the terminal; an id that reads as a Windows path is a slug in
    `grader feedback`'s zip, never '..\\'."""
    import io

    from rich.console import Console
    from rich.table import Table

    from grader.cli.common import plain
    from grader.course.handback import pages_of

    stored = batch["stored"]
    assert {"[red]markup", "x\\..\\..\\rt-evil"} <= set(stored)
    assert "[/x]" in stored["[red]markup"].reason
    table = Table("student", "reason")
    for r in stored.values():
        table.add_row(plain(r.student), plain(r.reason))
    shown = io.StringIO()
    Console(file=shown, width=300).print(table)
    assert "[red]markup" in shown.getvalue() and "[/x]" in shown.getvalue()
    assert "\x1b" not in shown.getvalue() and "\x07" not in shown.getvalue()
    members = pages_of(list(stored.values()), batch["root"] / "reports").members
    assert all("\\" not in m and ".." not in m.split("/") for m in members), sorted(members)


@pytest.mark.slow
def test_the_seccomp_filter_refuses_namespaces_keyrings_bpf_and_io_uring(batch):
    found = json.loads(output(batch["stored"]["syscalls"]))
    assert found.pop("clone3") == "ENOSYS", found  # so that the C library falls back to clone
    assert found.pop("unshare_command") != 0
    assert set(found.values()) == {"EPERM"}, found


@pytest.mark.slow
def test_writes_into_the_shared_folder_stop_at_disk_mb(batch):
    text = output(batch["stored"]["fill_shared"])
    assert "stopped after" in text and "ENOSPC" in text, text
    assert int(text.split("stopped after")[1].split()[0]) <= 256


@pytest.mark.slow
def test_memfd_sysv_shm_and_dev_shm_stay_within_memory_mb(batch):
    for name in ("memfd", "sysv_shm", "dev_shm"):
        result = batch["stored"][name]
        text = output(result)
        reached = [int(n) for n in re.findall(r"^(?:at|refused after) (\d+) MB", text, re.MULTILINE)]
        assert "WROTE" not in text and max(reached, default=0) <= 4096, (name, text)
        # Killed at the cap, or refused; on a loaded machine the cell may hit its time limit first
        # (tests/isolation/test_workdirs.py proves the cap itself without a time limit in the way).
        assert result.status in ("kernel_died", "timeout") or "refused after" in text, (name, result.status, text)


@pytest.mark.slow
def test_mountinfo_names_no_course_data_gradebook_or_checkout_path(batch):
    fields = [f for line in output(batch["stored"]["mountinfo"]).splitlines() for f in line.split()[3:5]]
    assert "/proc" in fields, fields  # the attack did read the table
    python = python_roots(sys.executable)
    outside = [f for f in fields if f.startswith((str(batch["root"]), str(REPO), str(Path.home())))
               and not f.startswith(python)]
    # The shared folder keeps its host path as mount point until the kernel's connection file is
    # written for sandbox.SHARED_INSIDE; what it holds comes from the run's own tmpfs ("/").
    assert all(f.startswith(str(batch["root"] / "work")) and f.endswith("/shared") for f in outside), outside


def messages(result) -> str:
    return " | ".join(c.message for c in result.checks)


@pytest.mark.slow
def test_display_updates_comms_and_clears_are_capped(batch):
    flood = batch["stored"]["flood_display"]
    assert flood.status == "graded" and len(flood.executed_notebook) < 3_000_000
    assert "still running" not in output(flood)  # over the cap: later output dropped
    rewrites = batch["stored"]["flood_rewrites"]  # each update charged for the 1,000 it rewrites
    assert "kernel was stopped" in rewrites.reason and len(rewrites.executed_notebook) < 3_000_000
    comm = batch["stored"]["flood_comm"]  # 2 GB of widget messages: stopped past 200 MB
    assert "sent more than 200 MB of output" in comm.reason and "kernel was stopped" in comm.reason, comm.reason
    # The grader held no flood: it grew by 3 GB (rewrites) and 860 MB (comms) before.
    assert batch["grew_mb"] < 600, batch["grew_mb"]


@pytest.mark.slow
def test_a_students_model_that_raises_in_the_checks_fails_them_not_the_grader(batch):
    result = batch["stored"]["two_inputs"]
    assert result.status == "graded", (result.status, result.staff_detail)
    assert "model.predict on an array of shape (" in messages(result), messages(result)
    assert "raised ValueError: " in messages(result) and "not your fault" not in messages(result)


@pytest.mark.slow
def test_forged_value_types_fail_the_checks_not_the_grader(batch):
    result = batch["stored"]["forged_meta"]
    assert result.status == "graded", (result.status, result.staff_detail)
    assert "history could not be read back" in messages(result), messages(result)


@pytest.mark.slow
def test_malformed_kernel_messages_are_the_submissions_not_a_fault(batch):
    result = batch["stored"]["protocol"]
    assert result.status == "graded" and "after" in output(result), (result.status, result.staff_detail)
    nb = nbformat.reads(result.executed_notebook, as_version=4)
    assert all(isinstance(c.get("execution_count"), (int, type(None))) for c in nb.cells)


@pytest.mark.slow
def test_unwritable_or_too_deep_notebooks_are_invalid_and_stop_no_batch(batch):
    stored = batch["stored"]
    assert not batch["batch"].stopped and stored["reference"].score == FULL
    for i in range(4):  # first in line, where the kernel probe once took them for a broken machine
        assert stored[f"!surrogate{i}"].status == "invalid", stored[f"!surrogate{i}"].reason
        assert "lone surrogate" in stored[f"!surrogate{i}"].reason
    assert stored["deep"].status == "invalid" and "nested more than" in stored["deep"].reason


@pytest.mark.slow
def test_swapping_the_exchange_folders_writes_nothing_where_the_student_points(batch):
    result = batch["stored"]["swap_exchange"]
    text = output(result)
    assert "SWAPPED" not in text and text.count("blocked") == 5, text
    assert list(batch["outside"].iterdir()) == []
    assert "tampered" not in messages(result)  # the exchange still worked for the checks


@pytest.mark.slow
def test_a_rewritten_connection_file_does_not_move_the_checker(batch):
    result = batch["stored"]["kernel_json"]
    assert "rewrote" in output(result) and not batch["listener"].connected
    assert "means" in messages(result) and "did not hand over" not in messages(result)


@pytest.mark.slow
def test_a_fifo_does_not_block_the_checker(batch):
    result = batch["stored"]["fifo"]
    assert "not a regular file" in messages(result), messages(result)
    assert result.checks_s < 60


@pytest.mark.slow
def test_a_keras_zip_bomb_is_refused_before_loading(batch):
    result = batch["stored"]["zip_bomb"]
    assert "was not loaded: it unpacks to 336 MB" in messages(result), messages(result)


@pytest.mark.slow
def test_a_keras_weights_file_declaring_unstored_gigabytes_is_refused_before_reading(batch):
    result = batch["stored"]["unstored_weights"]
    assert ("its model.weights.h5 declares an array of 1.6 GB (layers/dense/vars/0) that is not stored"
            " in it") in messages(result), messages(result)
