"""Throughput of one experiment run as N jobs at once (``hydra/launcher=gpu_shared``).

For each N in ``--jobs`` (default 1,2,4,8,16) runs one sweep of N seeds, all at once::

    python -m cl_bayes -m +experiment=<experiment> train.cuda_graphs=<auto|false> progress=false
        <overrides> seed=0,...,N-1 hydra/launcher=gpu_shared hydra.launcher.n_jobs=N

into a temporary results directory and sweep directory (removed afterwards), and prints for
each N the sweep's wall time, runs per hour, the speedup in runs per hour over N = 1, the
mean time a job spent training and evaluating (its record's ``train_seconds`` and
``eval_seconds``: how much the jobs slow each other down), and the devices the jobs' records
name. The wall time is the whole command's: starting the worker processes, loading the data
and building the model count, as they do in a real sweep. The best N for an experiment is the
one past which runs per hour stop growing (or GPU memory runs out).

    python benchmarks/gpu_jobs.py [--jobs 1,2,4,8,16] [--experiment vcl_permuted_mnist]
        [--cuda-graphs auto|false] [-- <overrides>]

e.g. a shortened VCL Permuted-MNIST job, eager::

    python benchmarks/gpu_jobs.py --jobs 1,4,8 --cuda-graphs false -- \\
        task.n_tasks=2 train.epochs=20 method.ml_init=false

It runs on a CPU too (``--experiment none``: the overrides alone), e.g. as a quick check::

    python benchmarks/gpu_jobs.py --jobs 1,2 --experiment none -- task=synthetic \\
        task.n_tasks=2 method=finetune train.epochs=1 model.hidden_sizes=[32]
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cl_bayes.config import REPO_ROOT
from cl_bayes.record import device_name


def sweep_command(
    n_jobs: int, experiment: str, cuda_graphs: str, overrides: list[str], workdir: Path
) -> list[str]:
    """The command line of one sweep of ``n_jobs`` seeds run at once, writing under ``workdir``."""
    chosen = [] if experiment == "none" else [f"+experiment={experiment}"]
    return [
        sys.executable,
        "-m",
        "cl_bayes",
        "-m",
        *chosen,
        f"train.cuda_graphs={cuda_graphs}",
        "progress=false",
        *overrides,
        # After the overrides: an experiment's own seed list (hydra.sweeper.params) and any
        # seed=... given are replaced by one seed per job.
        "seed=" + ",".join(str(seed) for seed in range(n_jobs)),
        "hydra/launcher=gpu_shared",
        f"hydra.launcher.n_jobs={n_jobs}",
        f"results_dir={workdir / 'results'}",
        f"hydra.sweep.dir={workdir / 'sweep'}",
    ]


def run_sweep(command: list[str], workdir: Path, n_jobs: int) -> tuple[float, list[dict]]:
    """Run ``command`` from the checkout; returns its wall seconds and the jobs' records."""
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"the sweep failed (exit code {proc.returncode}):\n{proc.stderr[-5000:]}")
    runs = sorted((workdir / "results" / "runs").glob("*.json"))
    records = [json.loads(path.read_text()) for path in runs]
    # A different count would make runs per hour wrong (e.g. a seed list that was not replaced).
    if len(records) != n_jobs or any(r["status"] != "completed" for r in records):
        statuses = collections.Counter(r["status"] for r in records)
        sys.exit(f"expected {n_jobs} completed runs, the sweep left {dict(statuses)}")
    return seconds, records


def visible_devices() -> str:
    """The GPU(s) the jobs can see, or this machine's CPU."""
    if torch.cuda.is_available():
        names = collections.Counter(
            device_name(torch.device("cuda", i)) for i in range(torch.cuda.device_count())
        )
        return ", ".join(f"{count} x {name}" for name, count in names.items())
    return f"CPU: {device_name(torch.device('cpu'))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", default="1,2,4,8,16", help="jobs at once to measure, comma-separated"
    )
    parser.add_argument(
        "--experiment",
        default="vcl_permuted_mnist",
        help="a conf/experiment/ name, or none for the overrides alone",
    )
    parser.add_argument("--cuda-graphs", choices=["auto", "false"], default="auto")
    parser.add_argument("overrides", nargs="*", help="after --: overrides of every job")
    args = parser.parse_args()
    jobs = [int(n) for n in args.jobs.split(",")]

    print(f"device: {visible_devices()}; torch {torch.__version__}", flush=True)
    rows = []
    for n_jobs in jobs:
        with tempfile.TemporaryDirectory(prefix="gpu_jobs-") as workdir:
            command = sweep_command(
                n_jobs, args.experiment, args.cuda_graphs, args.overrides, Path(workdir)
            )
            print(f"\n{n_jobs} at once: python {shlex.join(command[1:])}", flush=True)
            seconds, records = run_sweep(command, Path(workdir), n_jobs)
        devices = collections.Counter(r["device"] for r in records)
        job_seconds = statistics.mean(
            sum(r["train_seconds"]) + sum(r["eval_seconds"]) for r in records
        )
        rows.append((n_jobs, seconds, job_seconds, devices))
        print(f"  {seconds:.1f} s", flush=True)

    one = {n_jobs: seconds for n_jobs, seconds, _, _ in rows}.get(1)
    print()
    print(
        "| jobs at once | wall s | runs per hour | speedup over 1 job | job's train+eval s ", end=""
    )
    print("| devices |\n|---|---|---|---|---|---|")
    for n_jobs, seconds, job_seconds, devices in rows:
        speedup = f"{n_jobs * one / seconds:.2f}x" if one is not None else "-"
        used = ", ".join(f"{device} x{count}" for device, count in sorted(devices.items()))
        print(
            f"| {n_jobs} | {seconds:.1f} | {3600 * n_jobs / seconds:.1f} | {speedup} "
            f"| {job_seconds:.1f} | {used} |"
        )


if __name__ == "__main__":
    main()
