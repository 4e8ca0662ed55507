"""Sweep progress lines (cl_bayes/sweep.py) and the leaderboard sweep presets."""

from __future__ import annotations

import json
import logging
import math
import pickle
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from cl_bayes.config import CONF_DIR, register_task_sequences
from cl_bayes.sweep import BASIC_SWEEPER, NOTES_FOLDER, SweepProgress, job_line, sweep_grid
from tests.conftest import compose_config

LEADERBOARDS = {
    "leaderboard_split_mnist": "vcl_split_mnist",
    "leaderboard_split_mnist_fast": "vcl_split_mnist_fast",
    "leaderboard_permuted_mnist": "vcl_permuted_mnist",
    "leaderboard_permuted_mnist_fast": "vcl_permuted_mnist_fast",
}
# The overrides that make a VCL experiment's runs those of its leaderboard (the leaderboard
# keeps the model's default sampling; vcl_permuted_mnist samples weights, as the paper's code).
SAME_AS_LEADERBOARD = {"vcl_permuted_mnist": ["model.sampling=local"]}
METHODS = ["vcl", "finetune", "joint"]


def multirun_config(sweep_dir, task_overrides=(), params=None, sweeper=BASIC_SWEEPER):
    """What the launching process sees: the command line and the sweeper's params."""
    return OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep_dir)},
                "sweeper": {"_target_": sweeper, "params": params},
                "overrides": {"task": list(task_overrides)},
            }
        }
    )


def job_config(sweep_dir, num, overrides):
    return OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep_dir)},
                "job": {"num": num},
                "runtime": {"output_dir": str(Path(sweep_dir) / str(num))},
                "overrides": {"task": list(overrides)},
            }
        }
    )


def job_return(overrides, value, status=JobStatus.COMPLETED):
    ret = JobReturn()
    ret.overrides = list(overrides)
    ret.status = status
    ret._return_value = value
    return ret


def plain(cfg, key):
    value = cfg[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def compose_with_hydra(*overrides):
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


# --- counting the jobs ---------------------------------------------------------------------


def test_the_grid_multiplies_the_command_line_and_the_sweeper_params(tmp_path):
    config = multirun_config(
        tmp_path,
        ["task=split_mnist,permuted_mnist", "train.epochs=3", "+experiment=x"],
        {"method": "vcl,finetune,joint", "seed": "0,1,2"},
    )
    grid = sweep_grid(config)
    assert grid == {"method": 3, "seed": 3, "task": 2, "train.epochs": 1, "+experiment": 1}
    assert math.prod(grid.values()) == 18


def test_a_key_on_the_command_line_replaces_the_same_key_of_the_params(tmp_path):
    config = multirun_config(tmp_path, ["seed=7"], {"method": "vcl,joint", "seed": "0,1,2"})
    assert sweep_grid(config) == {"method": 2, "seed": 1}


def test_ranges_and_choices_expand_like_the_basic_sweeper(tmp_path):
    config = multirun_config(tmp_path, ["seed=range(0,4)", "method=choice(vcl,joint)"])
    assert sweep_grid(config) == {"seed": 4, "method": 2}


@pytest.mark.parametrize(
    "overrides, sweeper",
    [
        (["seed=0,1"], "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"),
        (["task=glob(*)"], BASIC_SWEEPER),  # needs the sweeper's config loader
    ],
)
def test_an_unknown_number_of_jobs_is_none(tmp_path, overrides, sweeper):
    assert sweep_grid(multirun_config(tmp_path, overrides, sweeper=sweeper)) is None


# --- the lines ---------------------------------------------------------------------------


def test_a_finished_job_shows_its_swept_overrides_time_and_acc():
    note = {
        "overrides": ["task.train_size=200", "method=vcl", "seed=2", "hydra.verbose=true"],
        "status": "completed",
        "acc": 0.971234,
        "error": None,
        "seconds": 41.4,
    }
    assert job_line(3, 18, note, {"method", "seed"}) == (
        "job 3/18 done (41 s): method=vcl seed=2  ACC=97.12%"
    )
    # Unknown swept keys: every override but Hydra's own; unknown total: no "/N".
    assert job_line(3, None, note, None) == (
        "job 3 done (41 s): task.train_size=200 method=vcl seed=2  ACC=97.12%"
    )
    assert job_line(1, 1, {**note, "acc": None}, set()).endswith("ACC=n/a")


def test_a_failed_job_shows_its_error():
    note = {
        "overrides": ["seed=1"],
        "status": "failed",
        "acc": None,
        "error": "TrainingDiverged: loss is nan in task 2, epoch 3",
        "seconds": 5.0,
    }
    assert job_line(2, 4, note, {"seed"}) == (
        "job 2/4 failed (5 s): seed=1  TrainingDiverged: loss is nan in task 2, epoch 3"
    )


def test_an_interrupted_job_says_so_without_an_error():
    note = {"overrides": ["seed=1"], "status": "interrupted", "acc": None, "error": None}
    assert job_line(2, 4, {**note, "seconds": 5.0}, {"seed"}) == "job 2/4 interrupted (5 s): seed=1"


def test_poll_seconds_must_be_positive():
    with pytest.raises(ValueError, match="poll_seconds must be positive"):
        SweepProgress(poll_seconds=0)


# --- the callback across processes ------------------------------------------------------


def test_jobs_elsewhere_are_reported_by_the_launching_process(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cl_bayes.sweep")
    launcher_side = SweepProgress(poll_seconds=0.05)
    launcher_side.on_multirun_start(
        multirun_config(tmp_path, ["seed=0,1,2", "train.epochs=1"], {"method": "vcl,joint"})
    )
    try:
        assert launcher_side.total == 6 and launcher_side.swept == {"seed", "method"}
        # What a joblib, submitit or Ray worker gets: a pickled copy, without the thread.
        worker_side = pickle.loads(pickle.dumps(launcher_side))
        assert worker_side._watcher is None and worker_side.notes_dir == launcher_side.notes_dir
        overrides = ["seed=1", "train.epochs=1", "method=joint"]
        worker_side.on_job_start(config=job_config(tmp_path, 4, overrides), task_function=None)
        worker_side.on_job_end(job_config(tmp_path, 4, overrides), job_return(overrides, 0.5))

        deadline = time.monotonic() + 10
        while "job 1/6 done" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "job 1/6 done (0 s): seed=1 method=joint  ACC=50.00%" in caplog.text
        notes = launcher_side.notes_dir
        assert json.loads((notes / "job4.json").read_text()) == {
            "num": 4,
            "overrides": overrides,
            "status": "completed",
            "acc": 0.5,
            "error": None,
            "seconds": pytest.approx(0, abs=5),
        }
    finally:
        launcher_side.on_multirun_end(multirun_config(tmp_path))
    assert caplog.text.count("job 1/6") == 1  # reported once, not again at the end
    assert not notes.exists() and not (tmp_path / NOTES_FOLDER).exists()
    assert not any(t.name == "sweep-progress" for t in threading.enumerate())


def test_the_basic_launcher_reports_each_job_at_once_in_order(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cl_bayes.sweep")
    progress = SweepProgress(poll_seconds=3600)  # the thread would never get there first
    progress.on_multirun_start(multirun_config(tmp_path, ["seed=0,1,2"]))
    jobs = [
        job_return(["seed=0"], 0.25),
        job_return(["seed=1"], RuntimeError("boom"), JobStatus.FAILED),
        # Ended without a result (Ctrl-C): Hydra leaves the status UNKNOWN.
        job_return(["seed=2"], None, JobStatus.UNKNOWN),
    ]
    try:
        for num, ret in enumerate(jobs):
            config = job_config(tmp_path, num, ret.overrides)
            progress.on_job_start(config=config, task_function=None)
            progress.on_job_end(config, ret)
            assert f"job {num + 1}/3" in caplog.text
    finally:
        progress.on_multirun_end(multirun_config(tmp_path))
    lines = [r.getMessage() for r in caplog.records if r.name == "cl_bayes.sweep"]
    assert lines == [
        "job 1/3 done (0 s): seed=0  ACC=25.00%",
        "job 2/3 failed (0 s): seed=1  RuntimeError: boom",
        "job 3/3 interrupted (0 s): seed=2",
    ]


def test_outside_multirun_a_job_leaves_no_note(tmp_path):
    progress = SweepProgress()
    progress.on_job_start(config=job_config(tmp_path, 0, []), task_function=None)
    progress.on_job_end(job_config(tmp_path, 0, []), job_return([], 0.9))
    assert list(tmp_path.iterdir()) == []


def test_every_run_selects_the_callback():
    """conf/config.yaml selects it: no command-line option is needed for progress lines."""
    callbacks = compose_with_hydra().hydra.callbacks
    assert list(callbacks) == ["sweep_progress"]
    assert callbacks.sweep_progress._target_ == "cl_bayes.sweep.SweepProgress"


# --- the leaderboard presets ----------------------------------------------------------------


@pytest.mark.parametrize("leaderboard", sorted(LEADERBOARDS))
def test_a_leaderboard_sweeps_every_method_over_three_seeds_with_progress_lines(leaderboard):
    cfg = compose_with_hydra(f"+experiment={leaderboard}")
    params = cfg.hydra.sweeper.params
    assert params.method.split(",") == METHODS and params.seed.split(",") == ["0", "1", "2"]
    assert cfg.hydra.callbacks.sweep_progress._target_ == "cl_bayes.sweep.SweepProgress"
    with_command_line = OmegaConf.merge(
        cfg, {"hydra": {"overrides": {"task": [f"+experiment={leaderboard}"]}}}
    )
    grid = sweep_grid(with_command_line)
    assert math.prod(grid.values()) == 9


@pytest.mark.parametrize("leaderboard", sorted(LEADERBOARDS))
def test_the_leaderboards_vcl_runs_are_the_vcl_experiments_runs(leaderboard):
    """Same config and protocol name, so the report groups them together."""
    vcl_experiment = LEADERBOARDS[leaderboard]
    for seed in (0, 2):
        ours = compose_config(f"+experiment={leaderboard}", "method=vcl", f"seed={seed}")
        theirs = compose_config(
            f"+experiment={vcl_experiment}",
            f"seed={seed}",
            *SAME_AS_LEADERBOARD.get(vcl_experiment, []),
        )
        assert OmegaConf.to_container(ours, resolve=True) == OmegaConf.to_container(
            theirs, resolve=True
        )


@pytest.mark.parametrize("leaderboard", sorted(LEADERBOARDS))
def test_every_method_of_a_leaderboard_shares_the_protocol(leaderboard):
    shared = ("task", "scenario", "protocol", "train", "optimizer", "evaluate_on")
    configs = {m: compose_config(f"+experiment={leaderboard}", f"method={m}") for m in METHODS}
    reference = configs["vcl"]
    assert reference.protocol == LEADERBOARDS[leaderboard]
    for method, cfg in configs.items():
        assert cfg.method._target_.rsplit(".", 2)[-2] == method
        for key in shared:
            assert plain(cfg, key) == plain(reference, key), (method, key)
        assert list(cfg.model.hidden_sizes) == list(reference.model.hidden_sizes)
