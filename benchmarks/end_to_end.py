"""Wall time of whole runs from the command line, with their accuracy and the device's name.

For each experiment named, runs (one after the other)::

    python -m cl_bayes +experiment=<experiment> seed=<seed> device=<device> progress=false
        results_dir=<results> hydra.run.dir=<a folder of its own> <overrides>

and prints, per run, the run's own log as it goes (a line after every task), the command's
wall time (starting Python, loading the data, training, evaluating and writing the record, as
a user waits for it), the record's training and evaluation seconds, its ACC and the device it
names. The records stay in ``<results>/runs``. Each run gets a Hydra run folder of its own
(``<run-dirs>/<time>-<process id>-<n>-<experiment>-seed<seed>``, the n-th experiment named;
``--run-dirs`` by default ``outputs/end_to_end`` in the checkout, a relative path from the
current folder), and its record is the
one there: several of these scripts may run at once into the same ``<results>``.
Targets of the VCL paper's protocols on one H100/H200-class GPU: ``vcl_permuted_mnist`` in
at most 3 minutes with ACC within the CPU seeds' spread (89.70 +- 0.93), ``vcl_split_mnist``
in at most 20 s.

    python benchmarks/end_to_end.py vcl_split_mnist vcl_permuted_mnist --device cuda
        [--seed 0] [--results results] [--run-dirs <folder>]
        [--overrides key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from cl_bayes.config import REPO_ROOT
from cl_bayes.record import RECORD_NAME

STARTED = time.strftime("%Y%m%d-%H%M%S")


def run_dir(run_dirs: Path, n: int, experiment: str, seed: int) -> Path:
    """The Hydra run folder of this process's ``n``-th run, of ``experiment`` with ``seed``."""
    return run_dirs / f"{STARTED}-{os.getpid()}-{n}-{experiment}-seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", help="conf/experiment/ names")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="results", help="results_dir of the runs")
    parser.add_argument(
        "--run-dirs",
        default=str(REPO_ROOT / "outputs" / "end_to_end"),
        help="folder of the runs' Hydra run folders (default: outputs/end_to_end in the "
        "checkout; a relative path is taken from the current folder)",
    )
    parser.add_argument("--overrides", nargs="*", default=[], help="overrides of every run")
    args = parser.parse_args()

    results = Path(args.results).resolve()
    rows = []
    for n, experiment in enumerate(args.experiments):
        folder = run_dir(Path(args.run_dirs).resolve(), n, experiment, args.seed)
        command = [
            sys.executable,
            "-m",
            "cl_bayes",
            f"+experiment={experiment}",
            f"seed={args.seed}",
            f"device={args.device}",
            "progress=false",
            f"results_dir={results}",
            f"hydra.run.dir={folder}",
            *args.overrides,
        ]
        print(f"python {shlex.join(command[1:])}", flush=True)
        started = time.perf_counter()
        # The run's own log (a line after every task) goes to this terminal: the progress.
        proc = subprocess.run(command, cwd=REPO_ROOT)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"the run failed (exit code {proc.returncode}); its log is above.")
        # The run's own record (another run may be writing into <results>/runs meanwhile).
        record = json.loads((folder / RECORD_NAME).read_text())
        path = results / "runs" / f"{record['run_id']}.json"
        rows.append((experiment, seconds, record))
        print(f"  {seconds:.1f} s, record {path}", flush=True)

    print("\n| experiment | device | wall s | train s | eval s | ACC (%) |")
    print("|---|---|---|---|---|---|")
    for experiment, seconds, record in rows:
        device = f"{record['device']} ({record.get('device_name', '?')})"
        print(
            f"| {experiment} | {device} | {seconds:.1f} | {sum(record['train_seconds']):.1f} "
            f"| {sum(record['eval_seconds']):.1f} | {100 * record['summary']['acc']:.2f} |"
        )


if __name__ == "__main__":
    main()
