import pytest

from grader import devices
from grader.errors import GraderError

GPU0 = devices.Device("GPU 0 (Test GPU)", "0")


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
