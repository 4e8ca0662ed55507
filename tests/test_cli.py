"""The command line as a user meets it: `python -m cl_bayes ...` in a subprocess."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from hydra.core.global_hydra import GlobalHydra

import cl_bayes.__main__
from cl_bayes.config import REPO_ROOT, register_task_sequences
from cl_bayes.errors import DataNotFoundError, exit_on_user_error
from tests.conftest import LONG_ENOUGH, TINY, run_cli


def _output(proc) -> str:
    return proc.stdout + proc.stderr


def test_a_run_prints_the_matrix_and_summary_and_writes_only_its_outputs(reference_cli_run):
    proc, cwd, run_dir, results = reference_cli_run
    out = _output(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "Accuracy matrix (%)" in out
    for t in range(1, 6):
        assert f"after T{t}" in out
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "completed" and record["tasks_completed"] == 5
    assert f"ACC={100 * record['summary']['acc']:.2f}" in out
    assert "BWT=" in out and "Forgetting=" in out
    assert json.loads((results / "runs" / f"{record['run_id']}.json").read_text()) == record
    assert list(cwd.iterdir()) == []  # nothing written in the working directory


def test_help_lists_tasks_methods_and_scenarios(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    out = _output(proc)
    assert proc.returncode == 0, out
    for name in ("split_mnist", "permuted_mnist", "rotated_mnist", "split_cifar10"):
        assert name in out
    for name in ("finetune", "joint"):
        assert name in out
    assert "task | domain | class" in out
    assert "resume=" in out
    assert list(tmp_path.iterdir()) == []


def test_unknown_method_lists_the_valid_ones_without_a_traceback(tmp_path):
    proc = run_cli("method=nope", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    out = _output(proc)
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert "Could not find 'method/nope'" in out
    assert "finetune" in out and "joint" in out


def test_non_positive_epochs_is_one_clear_line_and_nothing_trains(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        *TINY,
        "train.epochs=0",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, _output(proc)
    assert proc.stdout == ""
    assert proc.stderr == "error: train.epochs must be a positive number, got 0.\n"
    assert not run_dir.exists()  # it held nothing but Hydra's files for this start
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "override, key, shown",
    [
        ("seed=1.5", "seed", "1.5"),
        ("seed=abc", "seed", "'abc'"),
        ("seed=-1", "seed", "-1"),
        ("model.hidden_sizes=32", "model.hidden_sizes", "32"),
        ("device=cuda:abc", "device", "'cuda:abc'"),
        ("results_dir=null", "results_dir", "None"),
        ("train.batch_size=0.5", "train.batch_size", "0.5"),
        ("task.train_size=abc", "task.train_size", "'abc'"),
        ("logger=wandb logger.mode=onlin", "logger.mode", "'onlin'"),
        ("unseen_examples=0", "unseen_examples", "0"),
    ],
)
def test_a_bad_value_is_one_line_on_stderr_and_leaves_nothing_behind(
    tmp_path, override, key, shown
):
    cwd, results = tmp_path / "cwd", tmp_path / "results"
    cwd.mkdir()
    # Hydra's own output directory (outputs/<date>/<time> under the working directory), and
    # no data: a value that reached the data loading would fail there instead.
    proc = run_cli(
        *TINY,
        f"data.root={tmp_path / 'no_data'}",
        "data.download=false",
        f"results_dir={results}",
        *override.split(),
        cwd=cwd,
    )
    assert proc.returncode == 2, _output(proc)
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {key} must ") and f"got {shown}" in line, line
    assert list(cwd.iterdir()) == []  # no outputs/<date>/<time>, nor outputs/
    assert not results.exists() and not (tmp_path / "no_data").exists()


def test_a_failed_start_keeps_a_directory_that_holds_anything_else(tmp_path):
    # A folder of the user's given as the run directory, and a resume directory that is
    # also the run directory: neither is removed, and the log keeps the error.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    proc = run_cli(*TINY, "seed=abc", f"hydra.run.dir={kept}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: seed must "), _output(proc)
    assert (kept / "notes.txt").read_text() == "mine" and (kept / ".hydra").is_dir()
    assert proc.stderr in (kept / "__main__.log").read_text()

    resume = tmp_path / "resume"
    proc = run_cli(*TINY, f"resume={resume}", f"hydra.run.dir={resume}", cwd=tmp_path)
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr, _output(proc)
    assert (resume / ".hydra").is_dir()


def test_missing_data_names_the_folder_without_a_traceback(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(
        *TINY,
        f"data.root={empty}",
        "data.download=false",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    out = _output(proc)
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "InstantiationException" not in out
    assert out.startswith("error: MNIST not found under " + str(empty.resolve()))
    assert str(empty.resolve() / "MNIST" / "raw" / "train-images-idx3-ubyte") in out
    assert "CL_BAYES_DATA" in out and "data.root=" in out
    assert "\\n" not in out  # the message itself, not its repr


def test_sigterm_ends_the_run_with_one_line_and_an_interrupted_record(tmp_path):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cl_bayes", *LONG_ENOUGH]
        + [f"results_dir={tmp_path / 'results'}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run_dir / "checkpoint.pt").exists():
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert f"interrupted (signal {signal.SIGTERM.value})" in out
    assert f"continue with resume={run_dir}" in out
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted" and record["tasks_completed"] >= 1


def test_an_interrupt_before_any_task_completed_offers_no_resume(tmp_path):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "cl_bayes", *TINY]
        # A method that receives SIGTERM as its first task starts.
        + ["method=finetune", "method._target_=tests.test_run.InterruptedAtTask"]
        + ["+method.task_id=0"]
        + [f"results_dir={tmp_path / 'results'}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = _output(proc)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    signal_number = signal.SIGTERM.value
    assert f"interrupted (signal {signal_number}): no task completed; nothing to resume" in out
    assert "resume=" not in out
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted" and record["tasks_completed"] == 0
    assert not (run_dir / "checkpoint.pt").exists()


def test_a_bad_job_fails_alone_in_a_sweep(tmp_path):
    proc = run_cli(
        "-m",
        *TINY,
        "method=finetune",
        "train.epochs=0,1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"results_dir={tmp_path / 'results'}",
        cwd=tmp_path,
    )
    out = _output(proc)
    assert proc.returncode != 0, out
    # The failure names the job by its overrides, like the sweep's progress lines.
    assert re.search(
        r"UserError: the job with task\.train_size=200 train\.epochs=0 .*method=finetune.* "
        r"failed: train\.epochs must be a positive number, got 0\.",
        out,
    ), out
    assert "job 1/2 failed (" in out and "job 2/2 done (" in out
    assert "job 0" not in out
    assert "error: train.epochs must be a positive number, got 0.\n" in proc.stderr
    # The failed job's directory held nothing but Hydra's files: it is gone.
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["1", "multirun.yaml"]
    # The good job still ran to the end and kept its record.
    (record_path,) = (tmp_path / "results" / "runs").iterdir()
    record = json.loads(record_path.read_text())
    assert record["status"] == "completed" and record["config"]["train"]["epochs"] == 1


def test_every_job_keeps_freed_memory_whichever_launcher_runs_it(tmp_path, monkeypatch):
    # main() is what a launcher's worker calls (never the command line's own code): it must
    # ask for the allocator setting itself. Called here as a worker would, in this process.
    calls = []
    monkeypatch.setattr(cl_bayes.__main__, "keep_freed_memory", lambda: calls.append(1))
    run_dir = tmp_path / "run"
    argv = ["cl_bayes", *TINY, "seed=abc", f"hydra.run.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", argv)
    register_task_sequences()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit) as info:
            cl_bayes.__main__.main()
    finally:  # Hydra configured logging for its job; give pytest its own back
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        GlobalHydra.instance().clear()
    assert info.value.code == 2
    assert calls == [1]
    assert not run_dir.exists()


def test_a_scripts_user_error_is_one_message_and_exit_status_2(capsys):
    # The benchmark scripts end with exit_on_user_error(main): missing data or a bad setting
    # reaches the user as the suite's message, not as a traceback through Hydra.
    def main():
        raise DataNotFoundError("MNIST not found under /nowhere. Fix: set CL_BAYES_DATA.")

    with pytest.raises(SystemExit) as stopped:
        exit_on_user_error(main)
    assert stopped.value.code == 2
    assert (
        capsys.readouterr().err
        == "error: MNIST not found under /nowhere. Fix: set CL_BAYES_DATA.\n"
    )

    def buggy():
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # anything else is a bug and keeps its traceback
        exit_on_user_error(buggy)


def test_every_benchmark_script_reports_user_errors_in_one_message():
    for script in sorted((REPO_ROOT / "benchmarks").glob("*.py")):
        text = script.read_text()
        if "instantiate(" in text:  # builds the suite's tasks or models: data may be missing
            assert "from hydra.utils import instantiate" not in text, script.name
            assert "exit_on_user_error(main)" in text, script.name
