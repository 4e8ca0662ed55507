"""Whether the same run, repeated, ends with the same weights: with and without CUDA graphs,
alone on the device or beside other jobs.

Runs one configuration (``-- <overrides>``, as given to ``python -m cl_bayes``) ``--repeats``
times in each mode of ``--modes`` (``graphs``: ``train.cuda_graphs=true``, CUDA only;
``eager``: ``train.cuda_graphs=false``), each repetition a process of its own::

    python -m cl_bayes <overrides> device=<device> train.cuda_graphs=<true|false>
        progress=false results_dir=<tmp> hydra.run.dir=<tmp>/<mode>-<repetition>

and compares the tensors of the final checkpoints (the network's weights and the method's
state: VCL's posterior, coreset-tuned copies, importances, ...): every repetition against the
first of its mode, and the first of each mode against the first of the other. It prints, per
pair, the largest absolute difference (``nan`` where a value is NaN in one run only), how many
of the values differ (integer state, e.g. step counts, included), and the two ACCs.

``--beside N`` starts N other jobs on the same device first (``python -m cl_bayes
+experiment=<--beside-experiment> device=<device> seed=<i> progress=false``, into a temporary
folder), waits ``--beside-wait`` seconds for them to be training, and stops them after the
last repetition (or a failed one); a job that ends earlier is reported with the end of its
log. On a GPU, this tells whether jobs sharing
it change a run's numbers, and in which mode.

    python benchmarks/repeat_runs.py [--device cuda] [--modes graphs,eager] [--repeats 2]
        [--beside 0] [--beside-experiment vcl_permuted_mnist] [--beside-wait 15]
        [-- <overrides>]

Without overrides, the run is VCL on two small synthetic tasks (a few seconds), the setting of
``tests/test_cuda_graphs.py``. The exit status is 0 whatever the differences: the table is
the result.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from cl_bayes import checkpoint
from cl_bayes.config import REPO_ROOT
from cl_bayes.record import RECORD_NAME

MODES = {"graphs": "true", "eager": "false"}
# VCL on two small synthetic tasks, as tests/test_cuda_graphs.py runs it.
DEFAULT_RUN = [
    "task=synthetic",
    "task.n_tasks=2",
    "task.train_size=120",
    "task.test_size=60",
    "train.epochs=2",
    "train.batch_size=32",
    "model.hidden_sizes=[16]",
    "method=vcl",
    "optimizer=sgd",
]


def tensors(state: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a checkpoint's nested dicts and lists, with its path of keys."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key in sorted(state, key=str):
            yield from tensors(state[key], f"{prefix}/{key}")
    elif isinstance(state, (list, tuple)):
        for i, item in enumerate(state):
            yield from tensors(item, f"{prefix}/{i}")


def final_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model's and the method's tensors in the run's last checkpoint."""
    state = checkpoint.load(run_dir / checkpoint.CHECKPOINT_NAME)
    return dict(tensors({"model": state["model"], "method": state["method"]}))


def difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, int, int]:
    """Largest absolute difference, values that differ, values compared.

    Two NaNs at the same place are equal; a NaN against a number differs, and makes the largest
    difference NaN. Integer and boolean tensors are compared as numbers too.
    """
    if a.keys() != b.keys():
        raise SystemExit(f"the checkpoints hold different tensors: {sorted(a.keys() ^ b.keys())}")
    largest, differing, total = 0.0, 0, 0
    for key, x in a.items():
        y = b[key]
        if x.shape != y.shape:
            raise SystemExit(f"{key}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        x, y = x.double(), y.double()
        differs = ~((x == y) | (x.isnan() & y.isnan()))
        differing += int(differs.sum())
        total += x.numel()
        if differs.any():
            largest = max(largest, float((x - y)[differs].abs().max()), key=_nan_first)
    return largest, differing, total


def _nan_first(value: float) -> float:
    return math.inf if math.isnan(value) else value


def run_once(overrides: list[str], device: str, mode: str, run_dir: Path, results: Path) -> dict:
    """One repetition in a process of its own; its record."""
    command = [
        sys.executable,
        "-m",
        "cl_bayes",
        *overrides,
        f"device={device}",
        f"train.cuda_graphs={MODES[mode]}",
        "progress=false",
        f"results_dir={results}",
        f"hydra.run.dir={run_dir}",
    ]
    print(f"python {shlex.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((run_dir / RECORD_NAME).read_text())


def start_beside(n: int, experiment: str, device: str, folder: Path) -> list[subprocess.Popen]:
    """``n`` other jobs on ``device``, their output in ``folder``."""
    jobs = []
    for seed in range(n):
        command = [
            sys.executable,
            "-m",
            "cl_bayes",
            f"+experiment={experiment}",
            f"device={device}",
            f"seed={seed}",
            "progress=false",
            f"results_dir={folder / 'results'}",
            f"hydra.run.dir={folder / f'beside-{seed}'}",
        ]
        print(f"beside: python {shlex.join(command[1:])}", flush=True)
        with open(folder / f"beside-{seed}.log", "w") as log:  # the job keeps its own copy
            jobs.append(
                subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            )
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default=None, help="graphs,eager (default: eager on a CPU)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--beside", type=int, default=0, help="other jobs on the device")
    parser.add_argument("--beside-experiment", default="vcl_permuted_mnist")
    parser.add_argument("--beside-wait", type=float, default=15.0, help="seconds")
    parser.add_argument("overrides", nargs="*", help="the run's overrides, after --")
    args = parser.parse_args()

    on_cuda = args.device.startswith("cuda")
    modes = (args.modes or ("graphs,eager" if on_cuda else "eager")).split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes takes graphs and eager, comma-separated; got {unknown}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.beside < 0:
        parser.error(f"--beside must be at least 0, got {args.beside}")
    if "graphs" in modes and not on_cuda:
        parser.error("--modes graphs needs a CUDA device (--device cuda)")
    overrides = args.overrides or DEFAULT_RUN

    with tempfile.TemporaryDirectory(prefix="repeat_runs-") as tmp:
        folder = Path(tmp)
        beside = start_beside(args.beside, args.beside_experiment, args.device, folder)
        if beside:
            time.sleep(args.beside_wait)
        finals: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        accs: dict[tuple[str, int], float] = {}
        try:
            for repetition in range(args.repeats):
                for mode in modes:  # modes in turns: both see the same load
                    run_dir = folder / f"{mode}-{repetition}"
                    record = run_once(overrides, args.device, mode, run_dir, folder / "results")
                    finals[mode, repetition] = final_tensors(run_dir)
                    accs[mode, repetition] = 100 * record["summary"]["acc"]
        finally:
            ended = [i for i, job in enumerate(beside) if job.poll() is not None]
            for job in beside:
                job.terminate()
            for job in beside:
                job.wait()
            for i in ended:
                tail = (folder / f"beside-{i}.log").read_text().splitlines()[-5:]
                print(f"beside: job {i} had ended before the last repetition:", *tail, sep="\n  ")

    pairs = [((m, r), (m, 0)) for m in modes for r in range(1, args.repeats)]
    pairs += [((modes[0], 0), (other, 0)) for other in modes[1:]]
    print(
        f"\n{args.device}, {len(beside)} other job(s) started on it, {len(ended)} of them ended "
        f"early; run: {shlex.join(overrides)}\n"
        "| runs compared | largest abs difference | values differing | ACC (%) |\n|---|---|---|---|"
    )
    for a, b in pairs:
        largest, differing, total = difference(finals[a], finals[b])
        names = f"{a[0]} #{a[1]} vs {b[0]} #{b[1]}"
        share = f"{differing} of {total}"
        gap = "0 (identical)" if differing == 0 else f"{largest:.3g}"
        acc = f"{accs[a]:.2f} / {accs[b]:.2f}"
        print(f"| {names} | {gap} | {share} | {acc} |")


if __name__ == "__main__":
    main()
