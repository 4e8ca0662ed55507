"""Shared fixtures: the data root, composed configurations and tiny run settings."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir

import cl_bayes.data
from cl_bayes.config import CONF_DIR, REPO_ROOT, register_task_sequences

# Real MNIST in torchvision's layout lives next to the repository (`../shared/data`).
DATA_ROOT = (REPO_ROOT / ".." / "shared" / "data").resolve()
os.environ.setdefault("CL_BAYES_DATA", str(DATA_ROOT))

# The tests' networks are tiny and gain nothing from a second thread, while OpenMP threads
# spin-waiting for a busy core made a 5-task CLI run 5x slower on a loaded 2-core machine
# (61 s against 12 s). One thread per process, here and in the CLI subprocesses, keeps the
# suite quick; set OMP_NUM_THREADS to test with more.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Small enough for a whole 5-task run in about a second on 2 CPU cores.
TINY = [
    "task.train_size=200",
    "train.epochs=1",
    "model.hidden_sizes=[32]",
    "progress=false",
    "device=cpu",
]


@contextlib.contextmanager
def inside_hydra(*overrides: str, mode=None, job_num: int | None = None):
    """Make the composed config (with its ``hydra`` node) the current Hydra config.

    ``mode``: a ``hydra.types.RunMode`` (MULTIRUN for a job of a sweep); ``job_num``: the
    job's number. Yields the config, whose ``hydra.mode`` may be changed and set again with
    ``HydraConfig.instance().set_config``; the current config is cleared afterwards.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        if mode is not None:
            cfg.hydra.mode = mode
        if job_num is not None:
            cfg.hydra.job.num = job_num
    try:
        HydraConfig.instance().set_config(cfg)
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


def compose_config(*overrides: str):
    """The configuration ``python -m cl_bayes <overrides>`` would run with."""
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def compose_cfg():
    """``compose_cfg(*overrides)`` -> the composed ``DictConfig``."""
    return compose_config


@pytest.fixture
def tiny():
    """Overrides for a quick run (add ``results_dir=<tmp>`` yourself, or use ``tiny_cfg``)."""
    return list(TINY)


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(*overrides)``: a tiny config whose ``results_dir`` is under ``tmp_path``."""

    def make(*overrides: str):
        return compose_config(*TINY, f"results_dir={tmp_path / 'results'}", *overrides)

    return make


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (Path(os.environ["CL_BAYES_DATA"]) / "MNIST").is_dir():
        pytest.skip(f"no MNIST under {os.environ['CL_BAYES_DATA']} (set CL_BAYES_DATA)")
    return Path(os.environ["CL_BAYES_DATA"])


@pytest.fixture(scope="session")
def _loaded_datasets() -> dict:
    return {}


@pytest.fixture
def cached_data(monkeypatch, _loaded_datasets, data_root):
    """Load each torchvision data set from disk once per session (about 1 s each time).

    Safe because the task builders only index-copy the loaded tensors, never modify them.
    """
    real = cl_bayes.data.load_torchvision

    def load(dataset, root, download, device):
        key = (dataset, str(Path(root).resolve()), str(torch.device(device)))
        if key not in _loaded_datasets:
            _loaded_datasets[key] = real(dataset, root, download, device)
        return _loaded_datasets[key]

    monkeypatch.setattr(cl_bayes.data, "load_torchvision", load)
    return load


# A run long enough per task (about half a second on 2 idle cores) for the resume test to
# kill it between tasks, and short enough to keep the suite quick.
LONG_ENOUGH = [
    "method=finetune",
    "task.train_size=2000",
    "train.epochs=8",
    "train.batch_size=32",
    "model.hidden_sizes=[64]",
    "progress=false",
    "device=cpu",
]


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m cl_bayes <args>`` in ``cwd``; stdout and stderr captured as text."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "cl_bayes", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def reference_cli_run(tmp_path_factory, data_root):
    """One uninterrupted CLI run with ``LONG_ENOUGH`` settings, shared by the CLI and resume tests.

    Returns ``(completed process, working directory, run directory, results directory)``.
    """
    base = tmp_path_factory.mktemp("reference")
    cwd = base / "cwd"
    cwd.mkdir()
    run_dir, results = base / "run", base / "results"
    proc = run_cli(*LONG_ENOUGH, f"results_dir={results}", f"hydra.run.dir={run_dir}", cwd=cwd)
    return proc, cwd, run_dir, results


def _write_tiny_cifar10(root: Path, rng: np.random.Generator) -> dict:
    """CIFAR-10 as torchvision stores it: pickled dicts, uint8 ``(n, 3072)`` rows of R, G, B."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(range(10)) * 2  # every class twice per file
        rows = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        rows[0, :] = 0
        rows[1, :] = 255
        batches[name] = (rows, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {"batch_label": name, "data": rows, "labels": labels, "filenames": []}, handle
            )
    with open(folder / "batches.meta", "wb") as handle:
        names = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
        pickle.dump({"label_names": names, "num_cases_per_batch": 20, "num_vis": 3072}, handle)
    return batches


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
    """``(root, batches)``: a 120-image CIFAR-10 under ``root`` in torchvision's format.

    Every class appears twice in each of the five training files and the test file; the
    first image of each file is all zeros, the second all 255. torchvision checks each
    file's md5 against the real CIFAR-10 release, which these tiny files cannot match; any
    existing file is accepted instead (only in the tests using this fixture). The module's
    function is patched because ``CIFAR10._check_integrity`` and ``_load_meta`` both call it.
    """
    batches = _write_tiny_cifar10(tmp_path, np.random.default_rng(0))
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )
    return tmp_path, batches
