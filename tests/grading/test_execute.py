"""Running notebooks in a real kernel: errors, limits, death, outputs, seeds."""

import asyncio
import queue
import types
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell, new_output

from grader.grading import execute
from grader.grading.execute import StudentKernel, executed, notebook_text, warmup_code
from grader.grading.kernelenv import kernel_env, may_use_keras, notebook_imports
from grader.model.config import Limits
from tests.conftest import notebook

LIMITS = Limits(cell_seconds=4, total_seconds=20, kernel_start_seconds=30, output_bytes=50_000)


def run(tmp_path: Path, *sources: str, limits: Limits = LIMITS, nb=None):
    """Execute the cells (or NB); return the Execution and whether the kernel answered."""
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)

    async def go():
        async with executed(nb or notebook(*sources), workdir=work, shared=tmp_path, limits=limits,
                            seed=3, env=kernel_env(work, threads=1, gpus="")) as ex:
            return ex, ex.connection is not None

    return asyncio.run(go())


# Cells that must all run cleanly, in one kernel for the tests that read it (each test reads its cell).
CLEAN = {
    "seeded": ("import random, sys, numpy\nprint('keras' in sys.modules, random.random() =="
               " random.Random(3).random(), numpy.random.rand() == numpy.random.RandomState(3).rand())"),
    "hello": "print('hello')",
    "x": "x = 2",
    "error_looking": ("import sys\nprint('Traceback (most recent call last):', file=sys.stderr)\n"
                      "from IPython.display import display\n"
                      "display({'application/vnd.jupyter.error': 'x'}, raw=True)"),
    "environment": "import os\nprint(sorted(k for k in os.environ if 'SECRET' in k))\nprint(os.getcwd())",
    "rewrite": ("import json, sys\npath = sys.argv[sys.argv.index('-f') + 1]\n"
                "info = json.load(open(path))\ninfo.update(transport='tcp', ip='127.0.0.1')\n"
                "json.dump(info, open(path, 'w'))\nprint(json.load(open(path))['transport'])"),
}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The CLEAN cells run once, with a secret in the grader's environment; (execution, alive, folder)."""
    folder = tmp_path_factory.mktemp("clean-run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("GRADER_SECRET_DB_URL", "postgres://secret")
        ex, alive = run(folder, *CLEAN.values())
    return ex, alive, folder


def clean_output(ex, name: str) -> str:
    """The text the CLEAN cell NAME printed."""
    return ex.notebook.cells[list(CLEAN).index(name)].outputs[0]["text"]


@pytest.mark.slow
def test_clean_run_keeps_outputs_and_the_kernel_up(clean_run):
    ex, alive, _ = clean_run
    assert ex.status == "ok" and ex.reason == "" and alive
    assert clean_output(ex, "hello") == "hello\n"
    assert ex.kernel_start_s > 0 and ex.execution_s > 0


@pytest.mark.slow
def test_a_notebook_without_keras_is_seeded_without_importing_it(clean_run):
    ex, _, _ = clean_run
    assert clean_output(ex, "seeded") == "False True True\n"


@pytest.mark.slow
def test_error_reply_fails_the_cell_and_later_cells_still_run(tmp_path):
    ex, _ = run(tmp_path, "x = 1", "raise ValueError('boom')", "print('after')")
    assert ex.status == "cell_error"
    assert ex.reason == "code cell 2 raised ValueError: boom"
    assert ex.failed_cell.index == 1 and "ValueError" in ex.failed_cell.traceback
    assert ex.notebook.cells[2].outputs[0]["text"] == "after\n"


@pytest.mark.slow
def test_silenced_tracebacks_still_count_as_failures(tmp_path):
    ex, _ = run(tmp_path, "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                          "ip._showtraceback = lambda *a, **k: None",
                "1 / 0")
    assert ex.status == "cell_error" and ex.failed_cell.ename == "ZeroDivisionError"


@pytest.mark.slow
def test_error_looking_output_without_an_error_is_not_a_failure(clean_run):
    ex, _, _ = clean_run
    assert ex.status == "ok"
    assert "Traceback" in clean_output(ex, "error_looking")  # the cell did run


@pytest.mark.slow
def test_cell_timeout_stops_the_notebook_but_keeps_the_kernel(tmp_path):
    ex, alive = run(tmp_path, "x = 1", "while True:\n    pass", "y = 2")
    assert ex.status == "timeout" and "code cell 2 ran longer than 4 s" in ex.reason
    assert alive
    assert ex.notebook.cells[2].get("outputs") == []


@pytest.mark.slow
def test_total_limit_applies_across_cells(tmp_path):
    limits = Limits(cell_seconds=30, total_seconds=3, kernel_start_seconds=30)
    ex, _ = run(tmp_path, "import time\ntime.sleep(2)", "time.sleep(2)", "z = 1", limits=limits)
    assert ex.status == "timeout" and "total limit of 3 s" in ex.reason


@pytest.mark.slow
def test_a_kernel_that_exits_is_a_result_not_a_crash(tmp_path):
    ex, alive = run(tmp_path, "x = 1", "import os\nos._exit(0)", "y = 2")
    assert ex.status == "kernel_died" and "kernel died in code cell 2" in ex.reason and not alive


@pytest.mark.slow
def test_outputs_are_capped(tmp_path):
    ex, _ = run(tmp_path, "for i in range(20000):\n    print('spam' * 10)", "print('late')")
    assert ex.output_truncated
    kept = sum(len(o.get("text", "")) for c in ex.notebook.cells for o in c.get("outputs", []))
    assert kept < 60_000


@pytest.mark.slow
def test_seeds_make_runs_reproduce(tmp_path):
    code = "import random, numpy as np\nprint(random.random(), np.random.rand())"
    first, _ = run(tmp_path / "a", code)
    second, _ = run(tmp_path / "b", code)
    text = first.notebook.cells[0].outputs[0]["text"]
    assert text == second.notebook.cells[0].outputs[0]["text"]
    assert len(text.split()) == 2


@pytest.mark.slow
def test_the_kernel_sees_none_of_the_graders_environment(clean_run):
    ex, _, _ = clean_run
    out = clean_output(ex, "environment")
    assert out.splitlines()[0] == "[]"
    assert out.splitlines()[1].endswith("/work")


@pytest.mark.slow
def test_reasons_count_code_cells_only(tmp_path):
    nb = notebook("x = 1", "raise ValueError('boom')")
    nb.cells.insert(0, new_markdown_cell("# Title"))
    nb.cells.insert(2, new_markdown_cell("Some words"))
    ex, _ = run(tmp_path, nb=nb)
    assert ex.reason == "code cell 2 raised ValueError: boom" and ex.failed_cell.index == 3


@pytest.mark.slow
def test_display_updates_clears_and_comms_count_against_the_cap(tmp_path):
    updates = ("from IPython.display import display\nh = display('start', display_id=True)\n"
               "for i in range(200):\n    h.update('y' * 1000)")
    clears = "from IPython.display import clear_output\nfor i in range(2000):\n    clear_output()"
    comms = ("from comm import create_comm\nc = create_comm(target_name='junk')\n"
             "for i in range(200):\n    c.send({'state': {f'k{i}': 'z' * 1000}})")
    for name, code in (("updates", updates), ("clears", clears), ("comms", comms)):
        ex, alive = run(tmp_path / name, code, "print('late')")
        assert ex.status == "ok" and alive and ex.output_truncated, name
        assert ex.notebook.cells[1].outputs == [], name  # over the cap: dropped
        assert "widgets" not in ex.notebook.metadata, name
        assert len(nbformat.writes(ex.notebook)) < 60_000, name


# Raw messages from the kernel's own session, as a hostile notebook sends them.
SEND = ("k = get_ipython().kernel\ndef send(kind, content):\n"
        "    k.session.send(k.iopub_socket, kind, content, parent=k.get_parent())\n")
MALFORMED = (SEND + "send('status', {})\nsend('execute_input', {'code': 'x', 'execution_count': '<b>7</b>'})\n"
             "send('display_data', {'data': {'text/plain': 'x'}, 'metadata': {}, 'transient': 'id'})\n"
             "send('display_data', {'data': 5, 'metadata': {}})\nsend('stream', {'name': 'stdout'})\n"
             "send('error', {'ename': 3})\nsend('comm_msg', {'data': 3})\n"
             "k.iopub_socket.send_multipart([b'not', b'a', b'message'])\nprint('after')")


@pytest.mark.slow
def test_malformed_messages_from_the_kernel_are_passed_over_not_a_grader_failure(tmp_path):
    ex, alive = run(tmp_path, MALFORMED, "print('next')")
    assert ex.status == "ok" and alive, ex.reason
    assert [c.execution_count for c in ex.notebook.cells] == [1, 2]  # never the forged '<b>7</b>'
    assert ex.notebook.cells[0].outputs[-1]["text"] == "after\n"
    assert ex.notebook.cells[1].outputs[0]["text"] == "next\n"
    nbformat.validate(ex.notebook)


@pytest.mark.slow
def test_display_updates_are_charged_for_every_output_they_rewrite(tmp_path):
    # 100 small outputs of one display id, well under the cap; each update rewrites all of them:
    # 100 x 20 KB = 2 MB a time, where the update itself is 20 KB
    limits = Limits(cell_seconds=10, total_seconds=30, kernel_start_seconds=30, output_bytes=200_000)
    code = ("from IPython.display import display\nfor i in range(100):\n    display('s', display_id='d')\n"
            "h = display('s', display_id='d')\nfor i in range(5):\n    h.update('y' * 20_000)")
    ex, alive = run(tmp_path, code, "print('late')", limits=limits)
    assert ex.status == "ok" and alive and ex.output_truncated, ex.reason
    assert len(nbformat.writes(ex.notebook)) < 2 * limits.output_bytes


@pytest.mark.slow
def test_a_kernel_that_floods_past_a_hundred_times_the_cap_is_stopped(tmp_path):
    comms = ("from comm import create_comm\nc = create_comm(target_name='junk')\n"
             "for i in range(40):\n    c.send({'state': {'k': 'z' * 5_000_000}})")
    ex, alive = run(tmp_path, "x = 1", comms, "print('late')")
    assert ex.status == "kernel_died" and not alive, ex.reason
    assert ex.reason.startswith("code cell 2 sent more than 5 MB of output"), ex.reason
    assert "kernel was stopped" in ex.reason and ex.execution_s < 15


@pytest.mark.slow
def test_rewriting_the_connection_file_does_not_move_the_checks(clean_run):
    ex, alive, folder = clean_run
    assert ex.status == "ok" and alive
    assert ex.connection["transport"] == "ipc"
    assert ex.connection["ip"] == str(folder / "sock" / "kernel")
    assert clean_output(ex, "rewrite") == "tcp\n"  # the file did change


def test_an_oversized_notebook_loses_its_largest_outputs_before_it_is_stored():
    nb = notebook("print('small')", "print('big')")
    nb.cells[0].outputs = [new_output("stream", name="stdout", text="small\n")]
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="x" * 3_000_000)]
    text, cut = notebook_text(nb, 1_000_000)
    assert cut and len(text) < 1_200_000 and "small" in text and "output removed" in text
    small = notebook("a = 1")
    assert notebook_text(small, 1_000_000) == (nbformat.writes(small), False)


class FakeTensorFlow:
    """Just enough of tf.config for the GPU prologue: two GPUs and what was set on them."""

    def __init__(self):
        self.configured: dict[str, list] = {}
        self.growth: list[tuple[str, bool]] = []
        experimental = types.SimpleNamespace(set_memory_growth=self._refuse_growth)
        self.config = types.SimpleNamespace(
            list_physical_devices=lambda kind: ["GPU:0", "GPU:1"] if kind == "GPU" else [],
            set_logical_device_configuration=self.configured.__setitem__,
            get_logical_device_configuration=self.configured.get,
            LogicalDeviceConfiguration=lambda memory_limit: ("limit", memory_limit),
            experimental=experimental)

    def _refuse_growth(self, device, enable):
        if device in self.configured:  # what TensorFlow does on a device with a configuration
            raise ValueError("Cannot set memory growth on device when virtual devices configured")
        self.growth.append((device, enable))


def test_the_gpu_prologue_caps_each_gpu_and_keeps_set_memory_growth_harmless(monkeypatch):
    import sys

    from grader.grading.execute import gpu_prologue

    tf = FakeTensorFlow()
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    student: dict = {}
    exec(gpu_prologue(7488), student)
    assert tf.configured == {"GPU:0": [("limit", 7488)], "GPU:1": [("limit", 7488)]}
    assert set(student) == {"__builtins__"}  # nothing left in the student's namespace
    tf.config.experimental.set_memory_growth("GPU:0", True)  # the usual notebook line: no error
    tf.config.experimental.set_memory_growth("CPU:0", True)  # elsewhere TensorFlow still decides
    assert tf.growth == [("CPU:0", True)]
    assert gpu_prologue(0) == ""  # unknown memory: no cap, no prologue


def test_a_failing_gpu_setup_is_the_graders_fault_and_no_cell_runs(monkeypatch):
    from grader.grading.score import status_of
    from grader.model.result import GRADER_FAULT

    sent = []

    async def request(client, code, timeout):
        sent.append(code)
        return {"content": {"status": "error", "ename": "ImportError",
                            "evalue": "\x1b[31mlibcuda.so.1: cannot open\x1b[0m"}}

    async def launch(self, *, fresh_log):
        self._client = types.SimpleNamespace(kc=object(), nb=self.nb)
        return True

    monkeypatch.setattr(execute, "request", request)
    monkeypatch.setattr(execute.StudentKernel, "_launch", launch)
    kernel = execute.StudentKernel(notebook("print('never')"), workdir=Path("."), shared=Path("."),
                                   limits=LIMITS, env={})
    asyncio.run(kernel.start(prologue="setup", warmup="warm"))
    result = asyncio.run(kernel.run(0))
    assert sent == ["setup"]  # neither the warm-up, the seed nor any cell ran
    assert result.status == "kernel_failed"
    assert result.reason == ("the grader could not set up the GPU in the kernel (ImportError: "
                             "libcuda.so.1: cannot open)")
    assert status_of(result.status, None, []) == GRADER_FAULT


def test_a_gpu_kernels_environment_names_its_gpu_and_grows_memory_on_demand(tmp_path):
    gpu = kernel_env(tmp_path, threads=2, gpus="GPU-aaaa")
    assert gpu["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa" and gpu["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert gpu["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cpu = kernel_env(tmp_path, threads=2, gpus="")
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and "TF_FORCE_GPU_ALLOW_GROWTH" not in cpu


def test_a_jax_gpu_kernel_takes_memory_on_demand_up_to_its_share(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    gpu = kernel_env(tmp_path, threads=2, gpus="GPU-aaaa", memory_fraction=0.24378)
    assert gpu["KERAS_BACKEND"] == "jax" and gpu["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa"
    assert gpu["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert gpu["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.243"
    assert "XLA_CLIENT_MEM_FRACTION" not in gpu  # jaxlib refuses both names at once
    assert "JAX_PLATFORMS" not in gpu
    cpu = kernel_env(tmp_path, threads=2, gpus="", memory_fraction=0.5)
    assert cpu["JAX_PLATFORMS"] == "cpu" and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in cpu
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    tf = kernel_env(tmp_path, threads=2, gpus="GPU-aaaa", memory_fraction=0.24378)
    assert not [name for name in tf if name.startswith(("XLA_", "JAX_"))]  # TF's kernels unchanged


def test_only_a_tensorflow_kernel_runs_the_tensorflow_prologue():
    from grader.grading.execute import gpu_prologue

    assert "tf.config.set_logical_device_configuration" in gpu_prologue(7488, "tensorflow")
    assert gpu_prologue(7488) == gpu_prologue(7488, "tensorflow")
    assert gpu_prologue(7488, "jax") == ""  # JAX is capped by its environment instead


class _Dev:
    def __init__(self, platform, name):
        self.platform, self.name = platform, name

    def __str__(self):
        return self.name


def _gpus_used(modules: dict):
    """Evaluate the kernel's GPU question over MODULES, as the kernel would over sys.modules."""
    import ast
    import builtins

    from grader.grading.kernelcode import GPUS_USED as _GPUS_USED

    ast.parse(_GPUS_USED, mode="eval")  # a single expression: what user_expressions take
    fake_sys = types.SimpleNamespace(modules=modules)
    scope = {"__builtins__": {**vars(builtins), "__import__": lambda name, *a: fake_sys}}
    return eval(_GPUS_USED, scope)


def test_the_gpus_used_are_asked_of_the_backend_keras_runs_on():
    jax_gpu = types.SimpleNamespace(devices=lambda: [_Dev("gpu", "cuda:0")])
    jax_cpu = types.SimpleNamespace(devices=lambda: [_Dev("cpu", "TFRT_CPU_0")])
    tf = types.SimpleNamespace(config=types.SimpleNamespace(
        list_logical_devices=lambda kind: [_Dev("GPU", "/device:GPU:0")] if kind == "GPU" else []))

    def keras(name):
        return types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: name))

    assert _gpus_used({}) is None
    assert _gpus_used({"jax": jax_gpu, "keras": keras("jax")}) == ["cuda:0"]
    assert _gpus_used({"jax": jax_cpu, "keras": keras("jax")}) == []
    assert _gpus_used({"jax": jax_gpu}) == ["cuda:0"]  # JAX alone, no Keras
    assert _gpus_used({"jax": jax_cpu, "tensorflow": tf, "keras": keras("jax")}) == []
    assert _gpus_used({"jax": jax_cpu, "tensorflow": tf, "keras": keras("tensorflow")}) == ["/device:GPU:0"]
    assert _gpus_used({"tensorflow": tf}) == ["/device:GPU:0"]


def test_the_warm_up_imports_only_the_known_heavy_libraries_a_notebook_imports():
    nb = notebook("%matplotlib inline\nimport tensorflow as tf\nfrom matplotlib import pyplot",
                  "def f():\n    import pandas", "import os.path, requests", "x = (")
    assert notebook_imports(nb) == {"tensorflow", "matplotlib", "os", "requests"}
    code = warmup_code(nb)  # numpy always, keras where the seed will import it anyway
    assert "['numpy', 'matplotlib.pyplot', 'tensorflow', 'keras']" in code and "pandas" not in code
    assert code.startswith("exec(") and code.rstrip().endswith(", {})")  # nothing in the namespace


def test_keras_is_imported_and_seeded_only_where_the_notebook_may_use_it():
    numpy_only = notebook("import numpy as np, os, json\nfrom matplotlib import pyplot as plt")
    assert not may_use_keras(numpy_only)
    assert "['numpy', 'matplotlib.pyplot']" in warmup_code(numpy_only)
    for source in ("import keras", "from tensorflow import keras", "import course_helpers"):
        assert may_use_keras(notebook(source)), source  # a helper module may import Keras
        assert "'keras'" in warmup_code(notebook(source))


@pytest.mark.slow
@pytest.mark.parametrize("warmup", [
    "exec('import sys\\nsys.modules[\"half_imported\"] = sys\\nraise ImportError(\"the library is broken\")', {})",
    "import os\nos._exit(1)",
], ids=["raises", "kills-the-kernel"])
def test_a_failed_warm_up_costs_the_student_nothing(tmp_path, warmup):
    work = tmp_path / "work"
    work.mkdir()

    async def go():
        kernel = StudentKernel(notebook("import sys\nprint('half_imported' in sys.modules)"),
                               workdir=work, shared=tmp_path, limits=LIMITS,
                               env=kernel_env(work, threads=1, gpus=""))
        try:
            await kernel.start(warmup=warmup)
            return kernel.warmup_problem, await kernel.run(3)
        finally:
            await kernel.close()

    problem, ex = asyncio.run(go())
    assert problem and ex.status == "ok" and ex.connection is not None  # a fresh, cold kernel
    assert ex.notebook.cells[0].outputs[0]["text"] == "False\n" and ex.warmup_s > 0


def test_a_garbled_reply_after_an_interrupt_is_passed_over_not_a_grader_failure():
    """An interrupt that reaches the kernel while it sends a reply runs that reply's frames into
    the next message's: jupyter_client's session refuses it (Invalid Signature). Seen in CI once,
    after a cell's timeout: it made the student's timeout the grader's failure."""
    class Shell:
        def __init__(self, messages):
            self.messages = messages

        async def get_msg(self, timeout):
            item = self.messages.pop(0)
            if isinstance(item, Exception):
                raise item
            return item

    def client(*messages):
        kc = types.SimpleNamespace(shell_channel=Shell(list(messages)), execute=lambda *a, **k: "mine")
        return types.SimpleNamespace(kc=kc, km=types.SimpleNamespace(is_alive=lambda: True))

    reply = {"parent_header": {"msg_id": "mine"}, "content": {"status": "ok"}}
    other = {"parent_header": {"msg_id": "the timed-out cell's"}, "content": {"status": "ok"}}
    garbled = ValueError("Invalid Signature: b'd3a0'")
    assert asyncio.run(execute.request(client(garbled, other, reply), "", 5)) is reply
    assert asyncio.run(execute.answers(client(garbled, reply))) is True
    assert asyncio.run(execute.request(client(garbled, queue.Empty()), "", 5)) is None
