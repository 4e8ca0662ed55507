"""``benchmarks/end_to_end.py``: each run reports its own record, also beside another run."""

import json
import re
import subprocess
import sys

from cl_bayes.config import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "end_to_end.py"
TINY = ["task=synthetic", "task.n_tasks=2", "train.epochs=1", "logger=none"]


def test_two_scripts_at_once_into_one_results_folder_each_report_their_own_record(tmp_path):
    # Both runs write into the same <results>/runs while the other is running: each script
    # must take its record from its own run, not from whatever appeared in the folder.
    scripts = {
        seed: subprocess.Popen(
            [sys.executable, str(SCRIPT), "vcl_split_mnist_fast", "--device", "cpu"]
            + ["--seed", str(seed), "--results", str(tmp_path / "results")]
            + ["--run-dirs", str(tmp_path / "runs"), "--overrides", *TINY],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (0, 1)
    }
    for seed, script in scripts.items():
        output, _ = script.communicate(timeout=300)
        assert script.returncode == 0, output
        (path,) = re.findall(r"^  [\d.]+ s, record (\S+)$", output, flags=re.MULTILINE)
        record = json.loads(open(path).read())
        assert record["seed"] == seed and record["status"] == "completed"
        assert f"-seed{seed}-" in record["run_id"]
        # Its Hydra run folder is its own, under --run-dirs, and holds the same record.
        assert record["record_path"].startswith(str(tmp_path / "runs"))
        assert json.loads(open(record["record_path"]).read()) == record
        assert "| vcl_split_mnist_fast | cpu " in output
    assert len(list((tmp_path / "results" / "runs").glob("*.json"))) == 2
