import os
from pathlib import Path

import pytest

from grader.grading import devices
from grader.model.errors import GraderError

GPU0 = devices.Device("GPU 0 (Test GPU)", "GPU-0000", index="0", minor=0, memory_mb=16000)


def test_auto_without_gpus_is_the_cpu(monkeypatch):
    monkeypatch.setattr(devices, "detect_gpus", lambda: [])
    assert devices.choose("auto") == [devices.CPU] and devices.choose("none") == [devices.CPU]


def test_asking_for_a_gpu_the_machine_lacks_names_those_it_has(monkeypatch):
    monkeypatch.setattr(devices, "detect_gpus", lambda: [GPU0])
    assert devices.choose("0") == [GPU0] and devices.choose("auto") == [GPU0]
    with pytest.raises(GraderError, match=r"no GPU 3; it has GPU 0 \(Test GPU\)"):
        devices.choose("0,3")
    with pytest.raises(GraderError, match="not auto, none or GPU indices"):
        devices.choose("first")


def fake_smi(tmp_path, monkeypatch, csv: str, status: int = 0):
    """A fake nvidia-smi on PATH that prints CSV for --query-gpu and records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/smi-args\ncat <<'CSV'\n{csv}CSV\n"
                      f"exit {status}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def fake_proc(tmp_path, bus: str, minor: int):
    """A fake /proc/driver/nvidia/gpus with BUS's information file naming its device minor."""
    folder = tmp_path / "gpus" / bus
    folder.mkdir(parents=True)
    (folder / "information").write_text(f"Model: \t\t Test GPU\nIRQ:   \t\t 42\n"
                                        f"Bus Location: \t {bus}\nDevice Minor: \t {minor}\n")
    return str(tmp_path / "gpus")


def test_nvidia_smi_gives_each_gpu_its_uuid_memory_and_device_minor(tmp_path, monkeypatch):
    fake_smi(tmp_path, monkeypatch,
             "0, GPU-aaaa, 00000000:3B:00.0, 81559, NVIDIA H100 80GB HBM3\n"
             "1, GPU-bbbb, 00000000:86:00.0, [N/A], Test GPU, with a comma\n")
    proc = fake_proc(tmp_path, "0000:3b:00.0", 4)  # the driver's minor: not the index
    gpu0, gpu1 = devices.detect_gpus(proc)
    assert "--query-gpu=index,uuid,pci.bus_id,memory.total,name" in (tmp_path / "smi-args").read_text()
    assert gpu0 == devices.Device("GPU 0 (NVIDIA H100 80GB HBM3)", "GPU-aaaa", index="0", minor=4,
                                  memory_mb=81559)
    assert gpu1.label == "GPU 1 (Test GPU, with a comma)" and gpu1.cuda_visible_devices == "GPU-bbbb"
    assert gpu1.minor == 1 and gpu1.memory_mb == 0  # no information file: the index; N/A: unknown
    assert gpu0.gpu and not devices.CPU.gpu


def test_a_failing_or_missing_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    fake_smi(tmp_path, monkeypatch, "0, GPU-aaaa, 00000000:3B:00.0, 81559, X\n", status=9)
    assert devices.detect_gpus() == []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert devices.choose("auto") == [devices.CPU]


def test_each_gpu_gets_k_slots_with_a_kth_of_its_memory_less_cudas_own():
    other = devices.Device("GPU 1 (Test GPU)", "GPU-1111", index="1", minor=1, memory_mb=40000)
    slots = devices.slots([GPU0, other], 2)
    assert [s.index for s in slots] == ["0", "1", "0", "1"]  # taken in turn: few workers spread
    assert {s.memory_limit_mb for s in slots if s.index == "0"} == {16000 // 2 - devices.CUDA_RESERVE_MB}
    assert {s.memory_limit_mb for s in slots if s.index == "1"} == {40000 // 2 - 512}
    assert devices.slots([devices.CPU], 4) == [devices.CPU]
    assert devices.memory_cap(0, 2) == 0  # unknown memory: no cap
    with pytest.raises(GraderError, match="--per-gpu 16 leaves 488 MB .* pass a smaller --per-gpu"):
        devices.slots([GPU0], 16)


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", ""])
def test_per_gpu_must_be_a_positive_whole_number(text):
    with pytest.raises(GraderError, match="--per-gpu must be a whole number of kernels per GPU"):
        devices.per_gpu(text)
    assert devices.per_gpu("3") == 3


def test_the_run_line_says_cpu_and_why_or_the_gpus_and_their_cap():
    assert devices.describe([devices.CPU], 1, asked="auto") == (
        "grading on the CPU (no GPU found: nvidia-smi is missing or lists none)")
    assert devices.describe([devices.CPU], 1, asked="none") == "grading on the CPU (--gpus none)"
    line = devices.describe([GPU0], 2, asked="auto")
    assert line == ("grading on GPU 0 (Test GPU): 2 kernel(s) per GPU, 2 at once; TensorFlow may "
                    "use 7488 MB of GPU memory per kernel")


def test_doctor_shows_each_gpus_slots_and_cap_and_warns_without_nvidia_uvm(tmp_path):
    from grader.cli import doctor

    slots = devices.slots([GPU0], 2)
    row = doctor._gpus(slots, 2, asked="auto", uvm=str(tmp_path / "nvidia-uvm"))
    assert row.status == "warn" and "nvidia-modprobe -u -c=0" in row.detail
    (tmp_path / "nvidia-uvm").touch()
    row = doctor._gpus(slots, 2, asked="auto", uvm=str(tmp_path / "nvidia-uvm"))
    assert row == doctor.Row("GPUs (nvidia-smi)", "ok", "2 slots (2 per GPU): GPU 0 (Test GPU): "
                             "16000 MB, TensorFlow capped at 7488 MB per kernel")
    cpu = doctor._gpus([devices.CPU], 2, asked="auto")
    assert cpu.detail == "none: kernels run on the CPU (no GPU found: nvidia-smi is missing or lists none)"


def test_each_slot_knows_its_share_of_the_gpu_for_jax():
    slot = devices.slots([GPU0], 4)[0]
    assert slot.kernels == 4
    assert slot.memory_fraction == (16000 // 4 - devices.CUDA_RESERVE_MB) / 16000
    unknown = devices.Device("GPU 0 (Test GPU)", "GPU-0000", index="0", minor=0)
    assert devices.slots([unknown], 4)[0].memory_fraction == 0.25  # no size known: 1/K
    assert devices.slots([unknown], 1)[0].memory_fraction == 1.0


def test_the_report_names_the_backend_that_did_not_use_the_gpu():
    from grader.grading.score import device_used

    assert device_used(GPU0, ["CudaDevice(id=0)"], "jax") == "GPU 0 (Test GPU)"
    assert device_used(GPU0, [], "jax") == "CPU (GPU 0 (Test GPU) was assigned but JAX did not use it)"
    assert device_used(GPU0, None, "jax") == (
        "CPU (GPU 0 (Test GPU) was assigned; the notebook did not use JAX)")
    assert device_used(GPU0, None) == (
        "CPU (GPU 0 (Test GPU) was assigned; the notebook did not use TensorFlow)")
    assert device_used(devices.CPU, None, "jax") == "CPU"


def test_auto_workers_fit_the_cores_and_the_memory(monkeypatch):
    from grader.grading.executor import Settings

    monkeypatch.setattr(devices, "cores", lambda: 8)
    monkeypatch.setattr(devices, "memory_mb", lambda: 16384)
    assert devices.auto_workers(4096) == 2  # 16 GB / (4 GB + the next kernel and the checker)
    assert devices.auto_workers(1024) == 4 and devices.auto_workers(0) == 8
    assert devices.threads_per_kernel(4) == 2 and devices.threads_per_kernel(2) == 4
    assert len(Settings().slots(4096)) == 2 and len(Settings(workers=5).slots(4096)) == 5
    monkeypatch.setattr(devices, "memory_mb", lambda: 1000)
    assert devices.auto_workers(4096) == 1  # never none
    monkeypatch.setattr(devices, "memory_mb", lambda: 0)
    assert devices.auto_workers(4096) == 8  # memory unknown: the cores decide
    assert "--workers auto: 8 core(s)" in devices.describe_workers(8, auto=True)


def test_auto_workers_on_this_machine_use_every_core_without_oversubscribing_them():
    workers = devices.auto_workers(2048)
    assert 1 <= workers <= devices.cores()
    assert workers * devices.threads_per_kernel(workers) <= devices.cores()


def test_each_kernels_thread_pools_get_its_share_of_the_cores():
    from grader.grading.kernelenv import kernel_env

    env = kernel_env(Path("/tmp"), threads=devices.threads_per_kernel(2), gpus="")
    share = str(max(1, devices.cores() // 2))
    assert {env[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                             "TF_NUM_INTRAOP_THREADS")} == {share}
    assert int(env["TF_NUM_INTEROP_THREADS"]) <= int(share)
