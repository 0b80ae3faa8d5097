"""What a kernel starts with: its environment, and the heavy libraries imported ahead for it.

Light on purpose (no Jupyter, no nbformat): `grader run` works out the batch's zygote from these
before it imports the rest of the grader (grader.cli.early), and the pipeline from the very same
functions, so that the zygote started early is the one the batch asks for.
"""

from __future__ import annotations

import ast
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grader.grading.devices import Device
from grader.isolation import sandbox


def keras_backend() -> str:
    """The Keras backend the kernels run: the grader's $KERAS_BACKEND, else TensorFlow."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


# What a kernel may import ahead of its turn, in this order: well-known libraries that take
# seconds to import, by the top-level name a notebook imports (pyplot: with the kernel's
# inline backend, from MPLBACKEND). NumPy is there for every notebook and Keras for every one
# that may use it: the seed imports them anyway, so importing them earlier changes nothing a
# student's code sees.
WARM_LIBRARIES = {"numpy": "numpy", "scipy": "scipy", "pandas": "pandas",
                  "matplotlib": "matplotlib.pyplot", "sklearn": "sklearn",
                  "tensorflow": "tensorflow", "keras": "keras"}
_ALWAYS_WARM = ("numpy",)
# Libraries that never import Keras: a notebook that imports only these (and the standard
# library) does not get Keras imported and seeded for it.
_WITHOUT_KERAS = frozenset({"numpy", "scipy", "pandas", "matplotlib", "sklearn", "IPython",
                            "PIL", "seaborn", "sympy", "statsmodels", "tqdm"})


def notebook_imports(nb: Mapping[str, Any]) -> set[str]:
    """The top-level package names a notebook's code cells import at the top level of a cell
    (a cell that is not plain Python, with magics, say, is read without those lines). NB is
    read with nbformat, or as its JSON is (a cell's source a list of lines)."""
    found: set[str] = set()
    for cell in nb.get("cells", ()):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(map(str, source)) if isinstance(source, list) else str(source)
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.partition(".")[0])
    return found


def may_use_keras(nb: Mapping[str, Any]) -> bool:
    """Whether NB may use Keras: it imports something beyond the standard library and libraries
    known to do without Keras (its own helper module, say, which could import Keras)."""
    return _beyond_keras_free(notebook_imports(nb))


def _beyond_keras_free(imports: set[str]) -> bool:
    return bool(imports - sys.stdlib_module_names - _WITHOUT_KERAS)


def warm_modules(*notebooks: Mapping[str, Any]) -> list[str]:
    """The heavy libraries the NOTEBOOKS import (see WARM_LIBRARIES), as modules to import, in
    order."""
    imports = set().union(*map(notebook_imports, notebooks))
    wanted = imports | set(_ALWAYS_WARM) | ({"keras"} if _beyond_keras_free(imports) else set())
    return [module for name, module in WARM_LIBRARIES.items() if name in wanted]


def _jax_env(gpus: str, memory_fraction: float) -> dict[str, str]:
    """XLA's settings for a kernel whose Keras runs on JAX: on a GPU, memory taken as needed up
    to MEMORY_FRACTION of it (0: XLA's default); without one, the CPU alone (no CUDA probe)."""
    if not gpus:
        return {"JAX_PLATFORMS": "cpu"}
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if memory_fraction > 0:
        share = f"{math.floor(min(memory_fraction, 1.0) * 1000) / 1000:.3f}"
        # the name every jaxlib reads; newer ones refuse it together with XLA_CLIENT_MEM_FRACTION
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = share
    return env


def kernel_env(workdir: Path, *, threads: int, gpus: str,
               memory_fraction: float = 0.0) -> dict[str, str]:
    """The kernel's whole environment: nothing of the grader's own leaks in. GPUS is its
    CUDA_VISIBLE_DEVICES; a GPU kernel's TensorFlow takes GPU memory as it needs it, and its
    JAX (KERAS_BACKEND=jax) as it needs it up to MEMORY_FRACTION of the GPU."""
    backend = keras_backend()
    return {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": backend,
        # THREADS (devices.threads_per_kernel): the cores divided by the kernels running at once
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(max(1, min(2, threads))),
        "CUDA_VISIBLE_DEVICES": gpus,
        "GRADER_PARENT_PID": str(os.getpid()),
        **({"TF_FORCE_GPU_ALLOW_GROWTH": "true", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"} if gpus else {}),
        **(_jax_env(gpus, memory_fraction) if backend == "jax" else {}),
    }


def kernel_python(explicit: str = "") -> str:
    """The interpreter kernels run on: EXPLICIT, else $GRADER_KERNEL_PYTHON, else the grader's."""
    return explicit or os.environ.get("GRADER_KERNEL_PYTHON") or sys.executable


def base_env(device: Device, threads: int, home: Path) -> dict[str, str]:
    """A kernel's environment on DEVICE with THREADS and HOME, before what `_Kernel.stage` adds
    for one run (a sandboxed kernel's HOME and the GRADER_ settings of its launcher)."""
    env = kernel_env(home, threads=threads, gpus=device.cuda_visible_devices,
                     memory_fraction=device.memory_fraction if device.gpu else 0.0)
    if not device.gpu:
        # TensorFlow's GPU build logs a failed CUDA probe as an error on CPU-only kernels
        # ("failed call to cuInit"): noise on the student's page, so its C++ errors are off.
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def zygote_env(device: Device, threads: int) -> dict[str, str]:
    """The zygote's environment: a sandboxed kernel's (`_Kernel.stage`), less the settings of
    its launcher (GRADER_*), which each forked kernel gets with its own."""
    env = base_env(device, threads, Path(sandbox.HOME))  # HOME: the sandbox's, as in stage
    return {k: v for k, v in env.items() if not k.startswith("GRADER_")}
