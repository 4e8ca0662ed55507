"""``benchmarks/repeat_runs.py``: repeated runs compared tensor by tensor, beside other jobs."""

import importlib.util
import math
import re
import subprocess
import sys

import torch

from cl_bayes.config import REPO_ROOT
from tests.methods.runs import SYNTHETIC

SCRIPT = REPO_ROOT / "benchmarks" / "repeat_runs.py"
spec = importlib.util.spec_from_file_location("repeat_runs", SCRIPT)
repeat_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repeat_runs)


def test_the_default_run_is_the_gpu_tests_run_of_vcl():
    # The script's default repeats what tests/test_cuda_graphs.py compares on a GPU: the same
    # small synthetic tasks (device and progress are the script's own), VCL, SGD.
    shared = [o for o in SYNTHETIC if not o.startswith(("device=", "progress="))]
    assert repeat_runs.DEFAULT_RUN == [*shared, "method=vcl", "optimizer=sgd"]


def test_the_comparison_finds_every_differing_value_and_its_largest_gap():
    a = {"model": {"w": torch.zeros(2, 3)}, "method": [{"mu": torch.ones(4)}, torch.arange(3)]}
    flat = dict(repeat_runs.tensors(a))
    assert sorted(flat) == ["/method/0/mu", "/method/1", "/model/w"]
    b = {key: value.clone() for key, value in flat.items()}
    assert repeat_runs.difference(flat, b) == (0.0, 0, 13)
    b["/model/w"][1, 2] = -2.5
    b["/method/0/mu"][0] = 1 + 1e-6
    b["/method/1"][2] = 3  # integer state (2 -> 3) counts as differing too
    largest, differing, total = repeat_runs.difference(flat, b)
    assert largest == 2.5 and differing == 3 and total == 13
    # NaN at the same place in both runs is no difference; NaN against a number is, and wins.
    flat["/model/w"][0, 0] = b["/model/w"][0, 0] = math.nan
    assert repeat_runs.difference(flat, b)[:2] == (2.5, 3)
    b["/model/w"][0, 1] = math.nan
    largest, differing, _ = repeat_runs.difference(flat, b)
    assert math.isnan(largest) and differing == 4
    assert math.isnan(repeat_runs.difference(b, flat)[0])  # whichever side holds it


def test_eager_cpu_runs_repeat_exactly_beside_another_job(data_root):
    # Two eager repetitions of the default (VCL, random draws every step) while a
    # Permuted-MNIST VCL run (hours long: it outlives them) trains beside them: on a CPU, the
    # same seed gives the same weights, bit for bit.
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--repeats", "2", "--beside", "1"]
        + ["--beside-wait", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "cpu, 1 other job(s) started on it, 0 of them ended early" in done.stdout
    assert "beside: python -m cl_bayes +experiment=vcl_permuted_mnist device=cpu" in done.stdout
    (row,) = re.findall(r"^\| eager #1 vs eager #0 \| (.*) \| (\d+) of (\d+) \|", done.stdout, re.M)
    assert row[0] == "0 (identical)" and row[1] == "0" and int(row[2]) > 1000
    assert "had ended" not in done.stdout  # the job beside ran throughout


def test_graphs_on_a_cpu_are_refused_in_one_line():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--modes", "graphs"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--modes graphs needs a CUDA device" in done.stderr.splitlines()[-1]
