"""Every run gets its own output directory, even when several start in the same second."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SMALL = ["task=synthetic", "task.n_tasks=2", "train.epochs=1", "progress=false", "device=cpu"]


def test_two_runs_started_at_once_get_two_intact_run_directories(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cl_bayes",
                *SMALL,
                "method=finetune",
                f"seed={seed}",
                f"results_dir={tmp_path / 'results'}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (0, 1)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs

    run_dirs = sorted(path.parent for path in (tmp_path / "outputs").glob("*/*/record.json"))
    assert len(run_dirs) == 2
    seeds = set()
    for run_dir in run_dirs:
        record = json.loads((run_dir / "record.json").read_text())
        assert record["status"] == "completed" and record["tasks_completed"] == 2
        assert record["record_path"] == str(run_dir / "record.json")
        assert (run_dir / "checkpoint.pt").is_file()
        collected = tmp_path / "results" / "runs" / f"{record['run_id']}.json"
        assert json.loads(collected.read_text()) == record
        # Each log holds its own run only.
        log = (run_dir / "__main__.log").read_text()
        assert log.count("after task 2/2") == 1
        seeds.add(record["seed"])
    assert seeds == {0, 1}
