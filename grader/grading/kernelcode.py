"""The code the grader sends into a student's kernel, out of the student's sight: the random
seeds, the GPU's setup, the warm-up imports, and the question of which GPUs it used."""

from __future__ import annotations

from nbformat import NotebookNode

from grader.grading.kernelenv import warm_modules

# Runs in the kernel before the first cell, in a namespace of its own so the student sees nothing.
# Keras (and its backend) is seeded where the notebook may use it (see `may_use_keras`), or has
# it loaded already: importing Keras costs seconds, which a NumPy-only notebook need not pay.
_SEED = """\
exec('''
import os, random, sys
random.seed({seed})
try:
    import numpy
    numpy.random.seed({seed})
except ImportError:
    pass
if {keras} or "keras" in sys.modules:
    try:
        import keras
        keras.utils.set_random_seed({seed})
    except ImportError:
        pass
''', {{}})
"""

# Runs first in a GPU kernel, before the seed and the student's cells: caps what TensorFlow may
# take of the GPU (its memory already grows on demand: TF_FORCE_GPU_ALLOW_GROWTH). TensorFlow
# then refuses `set_memory_growth` on that GPU, a line many notebooks have, so that call becomes
# a no-op where a cap is set. The cap keeps kernels sharing a GPU out of each other's way; it is
# not a security boundary (the student's code could configure TensorFlow again).
_GPU_SETUP = """\
exec('''
import tensorflow as tf
for gpu in tf.config.list_physical_devices("GPU"):
    tf.config.set_logical_device_configuration(
        gpu, [tf.config.LogicalDeviceConfiguration(memory_limit={memory_mb})])
_set_memory_growth = tf.config.experimental.set_memory_growth
def set_memory_growth(device, enable):
    if tf.config.get_logical_device_configuration(device) is None:
        _set_memory_growth(device, enable)
tf.config.experimental.set_memory_growth = set_memory_growth
''', {{}})
"""


def gpu_prologue(memory_mb: int, backend: str = "tensorflow") -> str:
    """What a GPU kernel runs before the first cell to cap TensorFlow at MEMORY_MB of GPU
    memory; nothing where there is no cap, or where BACKEND is JAX (capped by kernel_env)."""
    return _GPU_SETUP.format(memory_mb=int(memory_mb)) if memory_mb > 0 and backend == "tensorflow" else ""


# Imports the libraries in a namespace of its own; one that is not installed is left out, one
# that fails to import fails the warm-up (the kernel is then started again, cold).
_WARMUP = """\
exec('''
import importlib.util
for name in {modules!r}:
    if importlib.util.find_spec(name.partition(".")[0]) is not None:
        __import__(name)
''', {{}})
"""


def seed_code(seed: int, *, keras: bool) -> str:
    """What a kernel runs right before the first cell: Python's, NumPy's and (where KERAS, or
    where Keras is loaded) Keras' random seeds set to SEED, out of the student's namespace."""
    return _SEED.format(seed=int(seed), keras=bool(keras))


def warmup_code(nb: NotebookNode) -> str:
    """What a kernel runs before NB's seed to import the heavy libraries NB imports; "" if none."""
    modules = warm_modules(nb)
    return _WARMUP.format(modules=modules) if modules else ""


# What the kernel really runs on, given its modules M: JAX's GPUs where JAX is Keras' backend (or
# JAX without TensorFlow), else TensorFlow's logical GPUs; None if the notebook imported neither.
GPUS_USED = (
    "(lambda m: [str(d) for d in m['jax'].devices() if d.platform in ('gpu', 'cuda', 'rocm')]"
    " if 'jax' in m and ('tensorflow' not in m or 'keras' in m and m['keras'].backend.backend() == 'jax')"
    " else [d.name for d in m['tensorflow'].config.list_logical_devices('GPU')]"
    " if 'tensorflow' in m else None)(__import__('sys').modules)"
)

