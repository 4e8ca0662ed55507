"""``benchmarks/end_to_end.py``: each run reports its own record, also beside another run."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

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


def _load_script():
    spec = importlib.util.spec_from_file_location("end_to_end", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_record_reported_is_the_runs_own_whatever_else_appears_in_the_results(
    tmp_path, monkeypatch, capsys
):
    end_to_end = _load_script()
    folders = []

    def fake_run(command, cwd):
        # A stand-in for `python -m cl_bayes ...`: it writes its record into its run folder
        # and into <results>/runs, where another run's record appears at the same time.
        options = dict(arg.split("=", 1) for arg in command if "=" in arg)
        folder, runs = Path(options["hydra.run.dir"]), Path(options["results_dir"]) / "runs"
        folders.append(folder)
        own = {
            "run_id": f"own-{len(folders)}",
            "device": "cpu",
            "train_seconds": [1.0],
            "eval_seconds": [0.5],
            "summary": {"acc": 0.5 + len(folders) / 10},
        }
        for path in (folder / "record.json", runs / f"{own['run_id']}.json"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(own))
        (runs / f"other-{len(folders)}.json").write_text(json.dumps({**own, "run_id": "other"}))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(end_to_end.subprocess, "run", fake_run)
    results = tmp_path / "results"
    argv = ["end_to_end.py", "x", "x", "--results", str(results), "--run-dirs", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    end_to_end.main()
    output = capsys.readouterr().out
    # The same experiment named twice: two run folders, each run's own record reported.
    assert len(set(folders)) == 2 and all(f.parent == tmp_path for f in folders)
    assert re.findall(r"record (\S+)", output) == [
        str(results / "runs" / "own-1.json"),
        str(results / "runs" / "own-2.json"),
    ]
    assert "| x | cpu (?) | " in output and "| 60.00 |" in output and "| 70.00 |" in output
