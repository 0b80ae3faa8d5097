#!/usr/bin/env bash
# The GPU figure of issue 11 (point 5), in one command on a lent GPU machine, from the repo root:
#
#     bash benchmarks/device.sh          (carry .whl, .gpudata and .debs; logs and JSON go to $OUT)
#
# The machine has python3 with JAX (CUDA) and no TensorFlow, so Keras runs on JAX. The grader's
# missing packages travel as wheels in .whl/ (Python 3.12, x86-64), its data in .gpudata
# (GRADER_DATA_HOME: raw/mnist/mnist.npz; the prepared folders of assignment01 and assignment03
# are built there on first use, since their key names the numpy and zlib that build them), and
# bubblewrap as Debian .debs in .debs/ (bubblewrap is unpacked into /; a library .deb only lends
# the files `ldd bwrap` says are missing). The wheels go into the image's own Python environment
# (VENV=image, the default) with a .pth for this checkout, so that a sandboxed kernel's Python is
# that whole environment; VENV=/some/path makes a venv there instead, whose .pth also adds the
# image's site-packages. Every step says whether it worked; a failed one does not stop the next.
# Whole run: under TOTAL_S seconds (default 400). Overrides: PER_GPU (1,2,4,8), ROUNDS (2),
# ASSIGNMENTS (assignment01,assignment03), NO_CPU=1 (no CPU baseline), QUICK=1 (no doctor, CPU or
# unit-test step), SANDBOX (auto, on, off: per_gpu.py's --sandbox; auto grades in the grader's
# sandbox where bubblewrap works).
set -u -o pipefail
# the sandbox's users (uid 61000 and up) read the venv, the checks, the grader and the data
umask 022
chmod -R a+rX grader assignments .gpudata 2>/dev/null || true
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
TEE=$!
TOTAL_S=${TOTAL_S:-400}
REPO=$(pwd)
# image (default): the wheels go into the image's own environment, so that a sandboxed kernel's
# Python is that environment and the sandbox binds all of it (its bin/ holds ptxas, which XLA
# runs; a venv of our own that only reaches the image's site-packages would leave it outside)
VENV=${VENV:-image}
WHL=${WHL:-.whl}  # another folder of wheels for a dry run elsewhere
PY=$VENV/bin/python  # (VENV=image: set below)
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax GRADER_DATA_HOME=$REPO/.gpudata
step() { echo; echo "=== [$SECONDS s] $*"; }
ok() { echo "--- OK: $*"; }
fail() { echo "--- FAILED: $*"; }

step "machine"
nvidia-smi --query-gpu=index,uuid,pci.bus_id,memory.total,name --format=csv || fail "nvidia-smi"
nvidia-smi -L || true
python3 -V; nproc; free -g | head -2; uname -r
python3 -c "import jax, jaxlib, numpy; print('image: jax', jax.__version__, 'numpy', numpy.__version__)" \
    || fail "the image's jax"
ls -d .whl .gpudata/*/* .debs/* 2>&1; du -sh .whl .gpudata .debs 2>&1

step "bubblewrap from .debs"
if ls .debs/*.deb >/dev/null 2>&1; then
    for deb in .debs/bubblewrap_*.deb; do
        if dpkg -x "$deb" / 2>&1; then
            ok "dpkg -x $deb /"
        else  # a read-only /usr: beside it, on the PATH the grader searches
            fail "dpkg -x $deb /: unpacking into /tmp/debs-root, on the PATH"
            mkdir -p /tmp/debs-root && dpkg -x "$deb" /tmp/debs-root && export PATH=/tmp/debs-root/usr/bin:$PATH
        fi
    done
    # Library .debs are never unpacked into /: their ./lib/ would replace a merged /usr's /lib link.
    # Only the libraries bwrap lacks are copied into /usr/lib/x86_64-linux-gnu.
    mkdir -p /tmp/debs-libs
    for deb in .debs/*.deb; do
        case $deb in */bubblewrap_*) ;; *) dpkg -x "$deb" /tmp/debs-libs || fail "dpkg -x $deb" ;; esac
    done
    BWRAP=$(command -v bwrap)
    for lib in $(ldd "${BWRAP:-/usr/bin/bwrap}" 2>/dev/null | awk '/not found/ {print $1}'); do
        if cp -a /tmp/debs-libs/{lib,usr/lib}/x86_64-linux-gnu/"$lib"* /usr/lib/x86_64-linux-gnu/ 2>/dev/null \
            || ls /usr/lib/x86_64-linux-gnu/"$lib" >/dev/null 2>&1; then
            ok "lent $lib from the .debs"
        else
            fail "$lib: bwrap needs it and no .deb has it"
        fi
    done
    ldconfig || true
else
    echo "no .debs/*.deb"
fi
command -v bwrap setpriv || fail "bwrap or setpriv not on the PATH"
bwrap --version || fail "bwrap --version"
if bwrap --ro-bind / / --dev /dev --proc /proc true; then
    ok "bwrap --ro-bind / / --dev /dev --proc /proc true"
else
    fail "bwrap --ro-bind / / --dev /dev --proc /proc true"
fi

step "the grader's wheels, into ${VENV}"
if [ "$VENV" = image ]; then
    PY=$(python3 -c "import sys; print(sys.executable)")
elif ! python3 -m venv --without-pip "$VENV"; then
    fail "python3 -m venv: installing into the image's own site-packages instead"
    PY=$(python3 -c "import sys; print(sys.executable)")
fi
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -n "$SITE" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHL"/*.whl \
        2>&1 | grep -v "^WARNING: Target directory" || true
    python3 - "$SITE/zz_image_and_grader.pth" "$REPO" "$VENV" <<'EOF'
import site, sys
dirs = [d for d in site.getsitepackages() if d]  # the image's own, after the venv's wheels
with open(sys.argv[1], "w") as f:
    f.write(sys.argv[2] + "\n")
    if sys.argv[3] != "image":  # in the image's own site-packages this line would add itself again
        f.write("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
EOF
    "$PY" -c "import grader, keras, jax, nbclient, ipykernel, sqlalchemy, nbconvert, matplotlib; \
print('venv:', __import__('sys').executable, 'keras', keras.__version__, 'jax', jax.__version__, \
'backend', keras.backend.backend(), 'grader from', grader.__file__)" && ok "venv" || fail "venv imports"
else
    fail "no site-packages folder for $PY"
fi

step "smoke: Keras on JAX trains a step on the GPU, in a kernel's clean environment"
SMOKE='
import resource, time
resource.setrlimit(resource.RLIMIT_DATA, (4096 << 20, 4096 << 20))  # what an unsandboxed GPU kernel gets
t = time.monotonic()
import jax, keras, numpy as np
print("devices", jax.devices(), "backend", keras.backend.backend())
m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
m.compile("adam", "mse")
h = m.fit(np.ones((64, 4), "float32"), np.ones((64, 1), "float32"), epochs=2, verbose=0)
w = m.weights[0].value
print("loss", h.history["loss"], "weights on", w.devices(), "in", round(time.monotonic() - t, 1), "s")
assert any(d.platform == "gpu" for d in jax.devices()), "JAX sees no GPU"
'
# the environment a kernel in the first slot of --per-gpu 4 gets from the grader itself
mapfile -t KENV < <("$PY" -c "
from pathlib import Path
from grader import devices
from grader.grading.kernelenv import kernel_env
slot = devices.slots(devices.choose('auto'), 4)[0]
env = kernel_env(Path('/tmp'), threads=2, gpus=slot.cuda_visible_devices,
                 memory_fraction=slot.memory_fraction if slot.gpu else 0.0)
print('\\n'.join(f'{k}={v}' for k, v in env.items()))")
echo "a kernel's environment: ${KENV[*]}"
env -i "${KENV[@]}" "$PY" -c "from jaxlib import xla_client as x; print('jaxlib reads', x.generate_pjrt_gpu_plugin_options())" \
    || true
if env -i "${KENV[@]}" timeout 120 "$PY" -c "$SMOKE"; then
    ok "smoke in a clean environment"
else
    fail "smoke in a clean environment; trying with the machine's LD_LIBRARY_PATH (${LD_LIBRARY_PATH:-unset})"
    if env -i "${KENV[@]}" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" timeout 120 "$PY" -c "$SMOKE"; then
        echo "the CUDA driver is found only through LD_LIBRARY_PATH, which kernels do not get:"
        echo "adding its folders to ldconfig on this throwaway machine"
        echo "${LD_LIBRARY_PATH:-}" | tr ':' '\n' | grep . > /etc/ld.so.conf.d/zz-device.conf && ldconfig \
            && env -i "${KENV[@]}" timeout 120 "$PY" -c "$SMOKE" && ok "smoke after ldconfig" || fail "smoke after ldconfig"
    else
        fail "smoke with LD_LIBRARY_PATH too"
    fi
fi

step "smoke inside the grader's sandbox (bubblewrap, as a kernel's user, the slot's GPU bound)"
# after the smoke above, so that /dev/nvidia-uvm exists (a sandboxed kernel cannot make it)
ls -l /dev/nvidia* 2>&1 | head -8
echo "where XLA's ptxas and nvJitLink are on the host (a sandboxed kernel sees its Python's folders and /usr):"
for tool in ptxas nvlink; do
    "$PY" -c "import os, shutil, sys; \
p = shutil.which('$tool', path=os.path.dirname(sys.executable)) or shutil.which('$tool'); \
print('$tool:', p, '->', p and os.path.realpath(p))"
done
find / -xdev \( -name 'libnvJitLink.so*' -o -name ptxas \) -not -path '/proc/*' 2>/dev/null | head -6
SANDBOXED='
PROBE = """
import os, resource, shutil, subprocess
def probe(when):  # can this kernel start ptxas (XLA compiles with it); its threads and descriptors
    ptxas = shutil.which("ptxas", path="/usr/local/cuda/bin:" + os.environ.get("PATH", ""))
    threads = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("Threads:"))
    try:
        said = subprocess.run([ptxas or "ptxas", "--version"], capture_output=True, text=True).stdout.strip()[-40:]
    except OSError as exc:
        said = f"cannot run: {exc!r}"
    nproc, nofile = resource.getrlimit(resource.RLIMIT_NPROC), resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = len(os.listdir("/proc/self/fd"))
    print(f"probe {when}: threads {threads} (NPROC {nproc}), descriptors {fds} (NOFILE {nofile}),"
          f" ptxas {ptxas}: {said}")
probe("before jax")
import jax; jax.devices()
probe("after jax.devices()")
"""
import os, subprocess, sys, tempfile
from pathlib import Path
from grader import devices, sandbox
from grader.model.config import Limits
from grader.grading.kernelenv import kernel_env
from grader.isolation.launch import APPLY_LIMITS
if sandbox.bwrap() is None:
    sys.exit("grader.isolation.sandbox.bwrap(): bubblewrap is missing or cannot make a sandbox here")
slot = devices.slots(devices.choose("auto"), 4)[0]
limits = Limits()
shared = Path(tempfile.mkdtemp(prefix="sandbox-smoke-"))
os.chmod(shared, 0o777)
uid = sandbox.claim_user() if os.geteuid() == 0 else 65534
env = kernel_env(shared, threads=2, gpus=slot.cuda_visible_devices,
                 memory_fraction=slot.memory_fraction if slot.gpu else 0.0)
env.update(HOME=sandbox.HOME, GRADER_SANDBOXED="1", GRADER_RLIMITS=sandbox.rlimits(limits, gpu=slot.gpu))
minors = (slot.minor,) if slot.gpu and slot.minor is not None else ()
spec = sandbox.Spec(files={}, shared=shared, limits=limits, gpus=minors, uid=uid)
print("slot:", slot.label, "minor", slot.minor, "uid", uid)
print("python roots bound read-only:", sandbox.python_roots(spec.python))
print("GPU binds:", " ".join(sandbox.gpu_binds(minors)) or "none")
code = APPLY_LIMITS + "apply_limits()\n" + PROBE + sys.argv[1]
argv = sandbox.command([sys.executable, "-c", code], spec)
sys.exit(subprocess.run(argv, env=env, timeout=150).returncode)
'
# its RLIMIT_DATA is the one a GPU kernel gets where the grader makes no memory cgroup
if timeout 170 "$PY" -c "$SANDBOXED" "$SMOKE"; then
    ok "smoke in the sandbox"
else
    fail "smoke in the sandbox"
fi

if [ -z "${QUICK:-}" ]; then  # QUICK=1: straight from the smokes to the figures
step "grader doctor --gpus auto --per-gpu 4 (its kernel probe lists TensorFlow's devices: none here)"
timeout 120 "$PY" -m grader doctor --gpus auto --per-gpu 4 && ok "doctor" || fail "doctor (exit $?)"

step "a CPU kernel (address space 4 GB) and a checker (12 GB) with no GPU visible"
CPUFIT='
import resource, sys
gb = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (gb << 30, gb << 30))
import jax, keras, numpy as np
m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
m.compile("sgd", "mse")
m.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
print("under", gb, "GB:", jax.devices())
'
env -i "${KENV[@]}" CUDA_VISIBLE_DEVICES= JAX_PLATFORMS=cpu timeout 60 "$PY" -c "$CPUFIT" 4 2>&1 | tail -3 \
    && ok "CPU kernel" || fail "CPU kernel"
env -i "${KENV[@]}" CUDA_VISIBLE_DEVICES= timeout 60 "$PY" -c "$CPUFIT" 12 2>&1 | tail -3 \
    && ok "checker" || fail "checker"

step "the grader's GPU detection and the JAX kernel's unit tests"
"$PY" -c "from grader.grading import devices; d = devices.choose('auto'); print(d); \
print(devices.describe(d, 4, asked='auto')); print([s.memory_fraction for s in devices.slots(d, 4)])" \
    || fail "devices"
timeout 60 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/grading/test_execute.py tests/grading/test_devices.py \
    -k "jax or gpus_used or backend or share" 2>&1 | tail -3 || fail "unit tests"

fi

LEFT=$((TOTAL_S - SECONDS - 15))
step "benchmarks/per_gpu.py, budget ${LEFT} s"
"$PY" benchmarks/per_gpu.py --per-gpu "${PER_GPU:-1,2,4,8}" --rounds "${ROUNDS:-2}" \
    --assignments "${ASSIGNMENTS:-assignment01,assignment03}" ${NO_CPU:+--no-cpu} --sandbox "${SANDBOX:-auto}" \
    --budget "$LEFT" --json "$OUT/per_gpu.json" --log "$OUT/per_gpu.log" \
    && ok "per_gpu" || fail "per_gpu (see per_gpu.log)"
tail -c 4000 "$OUT/per_gpu.log" | grep -i -B2 -A8 "error\|traceback" | tail -40 || true
nvidia-smi --query-gpu=memory.used,memory.total --format=csv || true
step "done in $SECONDS s"
exec >&- 2>&-
wait "$TEE" 2>/dev/null
