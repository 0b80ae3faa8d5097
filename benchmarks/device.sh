#!/usr/bin/env bash
# The GPU figure of issue 11 (point 5), in one command on a lent GPU machine, from the repo root:
#
#     bash benchmarks/device.sh          (carry .whl and .gpudata; logs and JSON go to $OUT)
#
# The machine has python3 with JAX (CUDA) and no TensorFlow, so Keras runs on JAX. The grader's
# missing packages travel as wheels in .whl/ (Python 3.12, x86-64), its prepared data in
# .gpudata/prepared (assignment01's and assignment03's). Kernels get a clean environment (no
# PYTHONPATH), so the wheels go into a venv of their own whose .pth files add the image's
# site-packages and this checkout. Every step says whether it worked; a failed one does not stop
# the next. Whole run: under TOTAL_S seconds (default 400). Overrides: PER_GPU (1,2,4,8), ROUNDS
# (2), ASSIGNMENTS (assignment01,assignment03), NO_CPU=1 (no CPU baseline).
set -u -o pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
TEE=$!
TOTAL_S=${TOTAL_S:-400}
REPO=$(pwd)
VENV=${VENV:-/tmp/venv}
WHL=${WHL:-.whl}  # another folder of wheels for a dry run elsewhere
PY=$VENV/bin/python
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
ls -d .whl .gpudata/prepared/* 2>&1; du -sh .whl .gpudata 2>&1

step "venv with the grader's wheels"
if ! python3 -m venv --without-pip "$VENV"; then
    fail "python3 -m venv: installing into the image's own site-packages instead"
    PY=$(python3 -c "import sys; print(sys.executable)")
fi
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -n "$SITE" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHL"/*.whl \
        2>&1 | grep -v "^WARNING: Target directory" || true
    python3 - "$SITE/zz_image_and_grader.pth" "$REPO" <<'EOF'
import site, sys
dirs = [d for d in site.getsitepackages() if d]  # the image's own, after the venv's wheels
with open(sys.argv[1], "w") as f:
    f.write(sys.argv[2] + "\n")
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
from grader.execute import kernel_env
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
"$PY" -c "from grader import devices; d = devices.choose('auto'); print(d); \
print(devices.describe(d, 4, asked='auto')); print([s.memory_fraction for s in devices.slots(d, 4)])" \
    || fail "devices"
timeout 60 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_execute.py tests/test_devices.py \
    -k "jax or gpus_used or backend or share" 2>&1 | tail -3 || fail "unit tests"

LEFT=$((TOTAL_S - SECONDS - 15))
step "benchmarks/per_gpu.py, budget ${LEFT} s"
"$PY" benchmarks/per_gpu.py --per-gpu "${PER_GPU:-1,2,4,8}" --rounds "${ROUNDS:-2}" \
    --assignments "${ASSIGNMENTS:-assignment01,assignment03}" ${NO_CPU:+--no-cpu} \
    --budget "$LEFT" --json "$OUT/per_gpu.json" --log "$OUT/per_gpu.log" \
    && ok "per_gpu" || fail "per_gpu (see per_gpu.log)"
tail -c 4000 "$OUT/per_gpu.log" | grep -i -B2 -A8 "error\|traceback" | tail -40 || true
nvidia-smi --query-gpu=memory.used,memory.total --format=csv || true
step "done in $SECONDS s"
exec >&- 2>&-
wait "$TEE" 2>/dev/null
