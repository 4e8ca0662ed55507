"""Run records made up for the leaderboard's tests, and the leaderboard built from them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cl_bayes.report import build_report

COMMAND = "python -m cl_bayes.report --results R --out O"


def make_record(
    run_id: str,
    acc: float = 0.9,
    *,
    status: str = "completed",
    task: str = "split_mnist",
    scenario: str = "task",
    method: str = "vcl",
    protocol: str = "p",
    seed: int = 0,
    bwt: float | None = -0.01,
    forgetting: float | None = 0.02,
    fwt: float | None = None,
    train_seconds: tuple[float, ...] = (10.0, 20.0),
    error: str | None = None,
    epochs: int = 5,
    updated_at: str = "2026-01-01T00:00:00+00:00",
    **summary_extra,
) -> dict:
    """A minimal valid two-task run record whose last row averages to ``acc``.

    Its config holds the seed and machine-local keys that differ from run to run, as real
    records' configs do, and ``train.epochs`` (also in ``method``, as Hydra resolves it).
    """
    R = [[0.99, None], [0.98, round(2 * acc - 0.98, 12)]]
    done = len(train_seconds)
    return {
        "run_id": run_id,
        "status": status,
        "task": task,
        "scenario": scenario,
        "method": method,
        "protocol": protocol,
        "seed": seed,
        "config": {
            "protocol": protocol,
            "seed": seed,
            "train": {"epochs": epochs},
            "method": {"epochs": epochs, "progress": seed % 2 == 0},
            "data": {"root": f"/data/{run_id}"},
            "results_dir": f"/results/{run_id}",
            "device": "cuda" if seed else "cpu",
            "progress": seed % 2 == 1,
        },
        "updated_at": updated_at,
        "n_tasks": 2,
        "tasks_completed": done,
        "accuracy_matrix": R,
        "summary": {
            "acc": acc,
            "bwt": bwt,
            "forgetting": forgetting,
            "fwt": fwt,
            "average_accuracy": [0.99, acc][:done],
            "tasks": done,
            **summary_extra,
        },
        "train_seconds": list(train_seconds),
        "error": error,
    }


# Bins of the first row of every calibrated sample record: the leaderboard must not pool them.
FIRST_ROW_BINS = {"count": [0.0, 0.0, 100.0], "confidence": [0.0, 0.0, 99.0], "correct": [0, 0, 0]}


def calibrated(
    record: dict,
    last_bins: dict,
    ece_after_task: list[float],
    entropy_after_task: list[float] | None = None,
) -> dict:
    """``record`` with the calibration a run records since it is measured (three bins here).

    ``last_bins`` are its reliability bins after the last task; the first row's are
    :data:`FIRST_ROW_BINS`. The summary gets ``ece_after_task``, the final ECE and an NLL,
    and ``entropy_after_task`` where given.
    """
    summary = {**record["summary"], "ece": ece_after_task[-1], "ece_after_task": ece_after_task}
    summary["nll"] = 0.25
    if entropy_after_task is not None:
        summary["entropy_after_task"] = entropy_after_task
    return {**record, "reliability_bins": [FIRST_ROW_BINS, last_bins], "summary": summary}


def calibrated_seeds(protocol: str = "cal") -> list[dict]:
    """Two calibrated seeds; their last bins add up to counts 2 / 18 / 40, confidence sums
    0.5 / 9.5 / 36.2 and correct 0 / 11 / 34 (pooled ECE (0.5 + 1.5 + 2.2) / 60 = 7 %); ECE
    after each task 2 / 10 % and 4 / 20 %; mean entropy after each task 0.1 / 0.3 and
    0.3 / 0.5 nats.
    """
    last_bins = [
        {"count": [0, 10, 30], "confidence": [0.0, 5.5, 27.0], "correct": [0, 6, 24]},
        {"count": [2, 8, 10], "confidence": [0.5, 4.0, 9.2], "correct": [0, 5, 10]},
    ]
    curves = [[0.02, 0.10], [0.04, 0.20]]
    entropies = [[0.1, 0.3], [0.3, 0.5]]
    return [
        calibrated(make_record(f"{protocol}-seed{seed}", seed=seed, protocol=protocol), b, c, e)
        for seed, (b, c, e) in enumerate(zip(last_bins, curves, entropies, strict=True))
    ]


def write_records(results: Path, *records: dict) -> Path:
    runs = results / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for record in records:
        (runs / f"{record['run_id']}.json").write_text(json.dumps(record))
    return results


def three_seeds(protocol: str = "p", **kwargs) -> list[dict]:
    """ACC 0.90 / 0.94 / 0.98, BWT -1 / -2 / -3 %, forgetting 1 / 2 / 6 %, 30 / 40 / 50 s."""
    return [
        make_record(
            f"{protocol}-seed{seed}",
            acc,
            seed=seed,
            protocol=protocol,
            bwt=bwt,
            forgetting=forgetting,
            train_seconds=(10.0, seconds - 10.0),
            **kwargs,
        )
        for seed, (acc, bwt, forgetting, seconds) in enumerate(
            [(0.90, -0.01, 0.01, 30.0), (0.94, -0.02, 0.02, 40.0), (0.98, -0.03, 0.06, 50.0)]
        )
    ]


def generate(tmp_path: Path, *records: dict, out: str = "out") -> tuple[str, str]:
    """Write ``records``, build the report; returns (Markdown, HTML)."""
    results = write_records(tmp_path / "results", *records)
    build_report(results, tmp_path / out, None, COMMAND)
    return (
        (tmp_path / out / "leaderboard.md").read_text(encoding="utf-8"),
        (tmp_path / out / "leaderboard.html").read_text(encoding="utf-8"),
    )


def rows_of(markdown: str) -> list[str]:
    """Rows (not headers or rules) of the ranked leaderboard tables, before the runs apart."""
    tables = markdown.split("## Runs not averaged")[0]
    return [line for line in tables.splitlines() if re.match(r"\| \d+ \|", line)]


def on_benchmark(
    record: dict,
    hidden_sizes: tuple[int, ...],
    epochs: int,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    model: str = "cl_bayes.models.bayes_mlp.BayesMLP",
) -> dict:
    """``record`` with the task, network, schedule and optimiser a real record's config holds."""
    record["config"].update(
        task={"name": record["task"], "n_tasks": 2, "val_fraction": 0.0},
        model={"_target_": model, "hidden_sizes": list(hidden_sizes)},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001},
    )
    record["config"]["train"] = {"epochs": epochs, "batch_size": batch_size}
    if steps is not None:
        record["config"]["train"]["steps"] = steps
    return record
