"""``benchmarks/method_epochs.py``: bad options are refused with one line that says the fix."""

import importlib.util
import sys

import pytest
import torch

from cl_bayes.config import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "method_epochs.py"


def _load(monkeypatch):
    spec = importlib.util.spec_from_file_location("method_epochs", SCRIPT)
    method_epochs = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "method_epochs", method_epochs)  # for its dataclasses
    spec.loader.exec_module(method_epochs)
    return method_epochs


@pytest.mark.parametrize("repeats", ["0", "-2", "x"])
def test_repeats_below_one_are_refused_before_any_work(monkeypatch, capsys, repeats):
    method_epochs = _load(monkeypatch)
    started = []
    monkeypatch.setattr(method_epochs, "prepare_process", lambda threads: started.append(1))
    monkeypatch.setattr(sys, "argv", ["method_epochs.py", "--repeats", repeats])
    with pytest.raises(SystemExit) as stopped:
        method_epochs.main()
    assert stopped.value.code == 2 and not started
    last = capsys.readouterr().err.splitlines()[-1]
    assert f"argument --repeats: needs a whole number >= 1, got '{repeats}'" in last


def test_cpu_clock_where_the_device_resolves_to_a_gpu_names_the_device_option(monkeypatch, capsys):
    method_epochs = _load(monkeypatch)
    # As on a GPU machine, where --device auto (the default) resolves to the GPU.
    monkeypatch.setattr(method_epochs, "resolve_device", lambda _: torch.device("cuda"))
    monkeypatch.setattr(method_epochs, "set_flush_denormal", lambda _: None)
    # Not the process settings a benchmark makes (threads, the allocator's trimming): they
    # would last for the tests after this one.
    monkeypatch.setattr(method_epochs, "keep_freed_memory", lambda: None)
    monkeypatch.setattr(sys, "argv", ["method_epochs.py", "--clock", "cpu"])
    with pytest.raises(SystemExit) as stopped:
        method_epochs.main()
    assert stopped.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert "but the device is cuda (--device auto): add --device cpu to time the CPU" in last
