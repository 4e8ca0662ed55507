"""The run record's measurements: each run's own peak memory."""

from __future__ import annotations

import mmap
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cl_bayes import record
from cl_bayes.record import code_changed, device_name, git_commit, peak_memory_mb, start_peak_memory

CPU = torch.device("cpu")
MB = 2**20


def _touch_and_free(size: int) -> None:
    """Map ``size`` bytes, write every page, unmap them: the resident peak rises by ``size``.

    Mapped directly rather than through malloc, which may keep freed memory in the heap
    (cl_bayes.allocator) and so keep it resident.
    """
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    block.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_the_peak_is_the_runs_own_not_the_processs():
    scope = start_peak_memory(CPU)
    assert scope == "run", "/proc/self/clear_refs is not writable here"
    _touch_and_free(300 * MB)
    earlier = peak_memory_mb(CPU, scope)
    assert earlier["cpu_rss_scope"] == "run"
    # A later job in the same process (the basic or joblib launcher) starts afresh.
    scope = start_peak_memory(CPU)
    later = peak_memory_mb(CPU, scope)
    assert later["cpu_rss_scope"] == "run"
    assert later["cpu_rss"] < earlier["cpu_rss"] - 200
    assert later["cpu_rss"] > 0


def test_where_the_peak_cannot_be_reset_the_record_says_it_is_the_processs(monkeypatch, tmp_path):
    monkeypatch.setattr(record, "CLEAR_REFS", tmp_path / "no_such_dir" / "clear_refs")
    scope = start_peak_memory(CPU)
    assert scope == "process"
    peak = peak_memory_mb(CPU, scope)
    lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak["cpu_rss_scope"] == "process"
    assert peak["cpu_rss"] == pytest.approx(lifetime / (1024 if sys.platform != "darwin" else MB))
    assert "cuda_allocated" not in peak
    # Without /proc/self/status either, "run" falls back to the lifetime peak and says so.
    monkeypatch.setattr(record, "STATUS", tmp_path / "no_status")
    assert peak_memory_mb(CPU, "run")["cpu_rss_scope"] == "process"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_cuda_peak_is_the_runs_own():
    device = torch.device("cuda")
    block = torch.ones(256 * MB // 4, device=device)  # 256 MB
    del block
    assert peak_memory_mb(device)["cuda_allocated"] >= 256
    scope = start_peak_memory(device)
    held = torch.cuda.memory_allocated(device) / MB  # what earlier tests still hold
    small = torch.ones(MB // 4, device=device)  # 1 MB
    peak = peak_memory_mb(device, scope)
    assert held + 1 <= peak["cuda_allocated"] < held + 256
    del small


def test_the_commit_is_the_checkout_s_and_none_for_a_package_inside_another_repository(tmp_path):
    checkout = Path(__file__).resolve().parent.parent
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_commit(checkout / "cl_bayes") == head
    # An installed copy inside someone else's repository: .../project/.venv/site-packages/cl_bayes
    project = tmp_path / "project"
    package = project / ".venv" / "site-packages" / "cl_bayes"
    package.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert git_commit(package) is None
    assert code_changed(package) is None


def test_a_record_says_whether_the_code_differs_from_its_commit(tmp_path):
    checkout = tmp_path / "checkout"
    package = checkout / "cl_bayes"
    package.mkdir(parents=True)
    (package / "run.py").write_text("x = 1\n")

    def git(*args):
        subprocess.run(["git", *args], cwd=checkout, check=True, capture_output=True)

    git("init", "-q")
    git("add", "cl_bayes/run.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code")
    assert code_changed(package) is False
    (checkout / "results").mkdir()
    (checkout / "results" / "run.json").write_text("{}")  # untracked results do not count
    assert code_changed(package) is False
    (package / "run.py").write_text("x = 2\n")
    assert code_changed(package) is True


def test_an_option_added_later_at_its_old_value_does_not_change_the_experiment():
    from cl_bayes.record import experiment_config

    old = {"seed": 0, "train": {"epochs": 5}, "model": {"hidden_sizes": [8]}}
    new = {"seed": 1, "train": {"epochs": 5, "steps": None}, "model": {"hidden_sizes": [8]}}
    assert (
        experiment_config(new)
        == experiment_config(old)
        == {
            "train": {"epochs": 5},
            "model": {"hidden_sizes": [8]},
        }
    )
    assert experiment_config({**new, "train": {"epochs": 5, "steps": 2000}}) != (
        experiment_config(old)
    )


def test_cuda_graphs_at_auto_keeps_the_fingerprint_of_runs_recorded_before_the_option():
    from cl_bayes.record import experiment_config

    old = {"seed": 0, "train": {"epochs": 5}}
    assert experiment_config({"seed": 0, "train": {"epochs": 5, "cuda_graphs": "auto"}}) == (
        experiment_config(old)
    )
    assert experiment_config({"seed": 0, "train": {"epochs": 5, "cuda_graphs": False}}) != (
        experiment_config(old)
    )


def test_reset_optimizer_at_true_keeps_the_fingerprint_of_runs_recorded_before_the_option():
    from cl_bayes.record import experiment_config

    old = {"seed": 0, "train": {"epochs": 5}}
    kept = {"seed": 0, "train": {"epochs": 5, "reset_optimizer": False}}
    assert experiment_config({"seed": 0, "train": {"epochs": 5, "reset_optimizer": True}}) == (
        experiment_config(old)
    )
    assert experiment_config(kept) != experiment_config(old)


def test_the_device_name_is_the_cpu_model_with_its_cores_or_the_gpu_name(monkeypatch):
    monkeypatch.setattr(record.os, "cpu_count", lambda: 7)
    cpu = device_name(torch.device("cpu"))
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
        if line.startswith("model name")
    ]
    if not models:
        pytest.skip("no model name in /proc/cpuinfo here")
    model = models[0]
    assert cpu == f"{model}, 7 cores"
    if torch.cuda.is_available():
        assert device_name(torch.device("cuda")) == torch.cuda.get_device_name(0)
