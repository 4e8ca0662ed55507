"""Resume: a run killed (SIGKILL) after its second task continues to the same R bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cl_bayes import checkpoint
from cl_bayes.errors import ConfigError, DataNotFoundError
from cl_bayes.record import LOCAL_KEYS
from cl_bayes.run import run
from tests.conftest import LONG_ENOUGH, run_cli


def _read(path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:  # written atomically, so either absent or complete
        return None


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, reference_cli_run):
    run_dir, results = tmp_path / "run", tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cl_bayes",
            *LONG_ENOUGH,
            f"results_dir={results}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            record = _read(run_dir / "record.json")
            if record is not None and record["tasks_completed"] >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # Killed, not finished on its own (if it finished, make LONG_ENOUGH longer).
    assert proc.returncode == -signal.SIGKILL
    killed = _read(run_dir / "record.json")
    assert killed["status"] == "running"  # a SIGKILL leaves no chance to say otherwise
    assert 2 <= killed["tasks_completed"] < 5
    # The checkpoint is written just before the record: it may be one task ahead.
    k = checkpoint.load(run_dir / checkpoint.CHECKPOINT_NAME)["record"]["tasks_completed"]
    assert k in (killed["tasks_completed"], killed["tasks_completed"] + 1) and k < 5

    resumed_proc = run_cli(
        f"resume={run_dir}",
        f"results_dir={results}",
        f"hydra.run.dir={tmp_path / 'resume'}",
        "progress=false",
        cwd=tmp_path,
    )
    out = resumed_proc.stdout + resumed_proc.stderr
    assert resumed_proc.returncode == 0, out
    assert f"Resuming {killed['run_id']} after task {k}/5" in out
    resumed = _read(run_dir / "record.json")
    assert resumed["run_id"] == killed["run_id"]
    assert resumed["status"] == "completed" and resumed["tasks_completed"] == 5
    # The completed tasks were not trained again.
    done = killed["tasks_completed"]
    assert resumed["train_seconds"][:done] == killed["train_seconds"]
    assert len(resumed["train_seconds"]) == 5
    assert resumed["accuracy_matrix"][:done] == killed["accuracy_matrix"][:done]
    assert _read(results / "runs" / f"{resumed['run_id']}.json") == resumed

    reference_proc, _, reference_dir, _ = reference_cli_run
    assert reference_proc.returncode == 0, reference_proc.stdout + reference_proc.stderr
    reference = _read(reference_dir / "record.json")

    def experiment(config):  # the config minus where things are on this machine
        return {k: v for k, v in config.items() if k not in LOCAL_KEYS}

    assert experiment(resumed["config"]) == experiment(reference["config"])
    assert resumed["accuracy_matrix"] == reference["accuracy_matrix"]  # exactly equal


def test_resume_from_a_folder_without_a_checkpoint_is_a_clear_error(tiny_cfg, tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(ConfigError, match=f"resume={missing}: no checkpoint at {missing}"):
        run(tiny_cfg(f"resume={missing}"), tmp_path / "run")
    assert not (tmp_path / "run").exists() and not missing.exists()


def _files(folder):
    """Every file under ``folder`` with its bytes and modification time."""
    return {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_resuming_a_completed_run_changes_nothing(tiny_cfg, tmp_path, cached_data):
    run_dir = tmp_path / "run"
    done = run(tiny_cfg("method=finetune"), run_dir)
    assert done["status"] == "completed"
    before = _files(tmp_path)
    again = run(tiny_cfg(f"resume={run_dir}"), tmp_path / "resume")
    assert again == _read(run_dir / "record.json")  # the record, read back
    assert again["run_id"] == done["run_id"] and again["status"] == "completed"
    assert _files(tmp_path) == before  # not a byte or a timestamp changed, nothing new


def test_a_fresh_run_refuses_a_folder_holding_another_runs_files(tiny_cfg, tmp_path, cached_data):
    run_dir = tmp_path / "run"
    run(tiny_cfg("method=finetune"), run_dir)
    before = _files(tmp_path)
    with pytest.raises(
        ConfigError, match=f"{run_dir} already holds another run's .*resume={run_dir}"
    ):
        run(tiny_cfg("method=finetune", "seed=1"), run_dir)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("key", ["results_dir", "run_dir"])
def test_an_unwritable_folder_is_reported_before_any_data_is_loaded(
    tiny_cfg, tmp_path, monkeypatch, key
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded before the folders were checked")

    monkeypatch.setattr("cl_bayes.data.load_torchvision", no_loading)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    run_dir, results = tmp_path / "run", tmp_path / "results"
    if key == "results_dir":
        results = blocker / "results"
    else:
        run_dir = blocker / "run"
    with pytest.raises(ConfigError, match=f"cannot write to {blocker / ''}.*Choose a folder"):
        run(tiny_cfg("method=finetune", f"results_dir={results}"), run_dir)


def test_the_resume_warning_names_only_the_settings_the_user_changed(tmp_path, data_root):
    tiny = [
        "method=finetune",
        "task.train_size=100",
        "train.epochs=1",
        "model.hidden_sizes=[8]",
        "progress=false",
        "device=cpu",
        "task.n_tasks=2",
    ]
    run_dir, results = tmp_path / "run", tmp_path / "results"
    first = run_cli(*tiny, f"results_dir={results}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    # Interrupted after its first task, as far as the checkpoint knows.
    state = checkpoint.load(run_dir / checkpoint.CHECKPOINT_NAME)
    state["record"]["tasks_completed"] = 1
    checkpoint.save(run_dir / checkpoint.CHECKPOINT_NAME, state)

    def resume(*extra):
        proc = run_cli(
            f"resume={run_dir}",
            f"results_dir={results}",
            f"hydra.run.dir={tmp_path / 'resume' / str(len(extra))}",
            "progress=false",
            *extra,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [line for line in (proc.stdout + proc.stderr).splitlines() if "ignoring" in line]

    # A bare resume differs from the run in method, model, task and train, yet changes nothing.
    assert resume() == []
    # Settings equal to the checkpoint's, and local ones, are not changes either.
    assert resume("train.epochs=1", "device=cpu", "results_dir=" + str(results)) == []
    (warning,) = resume("seed=5", "train.epochs=1", "optimizer.lr=0.5")
    assert warning.endswith("ignoring the changed settings optimizer.lr=0.5, seed=5")


def test_a_start_that_fails_on_missing_data_creates_no_folder(tiny_cfg, tmp_path):
    results, run_dir = tmp_path / "results", tmp_path / "run"
    cfg = tiny_cfg(
        "method=finetune",
        f"results_dir={results}",
        f"data.root={tmp_path / 'no_data'}",
        "data.download=false",
    )
    with pytest.raises(DataNotFoundError):
        run(cfg, run_dir)
    assert sorted(tmp_path.iterdir()) == []
