"""Which runs are averaged together: one per seed, one configuration per group."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math

import numpy as np

from cl_bayes.report.groups import (
    benchmark_fingerprint,
    config_fingerprint,
    drop_repeated_seeds,
    group_runs,
)
from tests.report.sample_records import generate, make_record, on_benchmark, rows_of, three_seeds


def test_a_seed_run_twice_counts_once_the_newer_run_kept_and_the_older_listed(tmp_path, caplog):
    again = make_record("p-seed1-again", 0.96, seed=1, updated_at="2026-02-01T00:00:00+00:00")
    with caplog.at_level(logging.WARNING, logger="cl_bayes.report"):
        markdown, html_text = generate(tmp_path, *three_seeds(), again)
    # Kept ACC 0.90, 0.96, 0.98: mean 94.67 %, std sqrt(((-14)^2 + 4^2 + 10^2) / 9 / 2) = 4.16 %.
    expected_std = np.std([0.90, 0.96, 0.98], ddof=1)
    assert math.isclose(100 * expected_std, 4.163, abs_tol=1e-3)
    (row,) = rows_of(markdown)
    assert row.startswith(
        "| 1 | vcl | task-IL, multi-head | p | 3 | 94.67 ± 4.16 | -1.67 ± 1.15 | 3.00 ± 2.65 |"
    )
    apart = markdown.split("## Runs not averaged")[1]
    assert (
        "| p-seed1 | superseded | 2/2 | p | seed 1 run again: the newer run p-seed1-again "
        "is averaged |" in apart
    )
    assert "p-seed1-again" not in apart.replace("newer run p-seed1-again", "")
    assert "Generated from 4 run records" in markdown
    assert "superseded" in html_text
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "not averaging p-seed1:" in warning and "p-seed1-again" in warning


def test_the_newest_run_of_a_seed_is_kept_ties_broken_by_run_id():
    old = make_record("z-old", 0.5, updated_at="2026-01-01T10:00:00+00:00")
    new = make_record("a-new", 0.6, updated_at="2026-01-01T11:00:00+00:00")
    tie_a = make_record("tie-a", 0.7, seed=1, updated_at="2026-01-02T00:00:00+00:00")
    tie_b = make_record("tie-b", 0.8, seed=1, updated_at="2026-01-02T00:00:00+00:00")
    no_seed = [make_record(f"n{i}", 0.9, seed=2) for i in range(2)]
    for record in no_seed:
        record["seed"] = None
    groups, superseded = drop_repeated_seeds(group_runs([old, new, tie_a, tie_b, *no_seed]))
    assert [r["run_id"] for runs in groups.values() for r in runs] == [
        "a-new",
        "tie-b",
        "n0",
        "n1",
    ]
    assert sorted(s.record["run_id"] for s in superseded) == ["tie-a", "z-old"]
    assert {s.status for s in superseded} == {"superseded"}


def test_config_fingerprint_leaves_out_seed_and_machine_local_keys():
    record = make_record("r", seed=3, epochs=7)
    record["config"]["hydra"] = {"run": {"dir": "/somewhere"}}
    experiment = {"protocol": "p", "train": {"epochs": 7}, "method": {"epochs": 7}}
    expected = hashlib.sha1(json.dumps(experiment, sort_keys=True).encode()).hexdigest()[:6]
    assert config_fingerprint(record["config"]) == expected
    assert config_fingerprint(make_record("s", seed=4, epochs=7)["config"]) == expected
    assert config_fingerprint(make_record("t", seed=3, epochs=8)["config"]) != expected
    assert config_fingerprint(None) == "none"


def test_an_option_added_later_at_its_old_value_keeps_the_fingerprint():
    before = make_record("r", seed=0, epochs=7)
    before["config"]["model"] = {"hidden_sizes": [100, 100]}
    local, weights = copy.deepcopy(before), copy.deepcopy(before)
    local["config"]["model"]["sampling"] = "local"
    weights["config"]["model"]["sampling"] = "weights"
    fingerprint = config_fingerprint(before["config"])
    assert config_fingerprint(local["config"]) == fingerprint
    assert config_fingerprint(weights["config"]) != fingerprint
    assert local["config"]["model"]["sampling"] == "local"  # the record itself is untouched


def test_a_benchmark_is_the_task_network_size_schedule_and_optimiser_not_the_method():
    vcl = on_benchmark(make_record("vcl"), (256, 256), 120)["config"]
    expected = benchmark_fingerprint(vcl)
    # Another method, another kind of network of the same size, the method's own settings and
    # an explicit null for the steps a record written before them lacks: the same benchmark.
    same = copy.deepcopy(vcl)
    same["model"] = {"_target_": "cl_bayes.models.mlp.MLP", "hidden_sizes": [256, 256]}
    same["model"]["dropout"] = 0.5
    same["method"] = {"_target_": "cl_bayes.methods.mc_dropout.MCDropout", "samples": 10}
    same["protocol"], same["train"]["steps"] = "other_name", None
    same["train"]["reset_optimizer"] = True  # the default, which earlier records lack
    assert benchmark_fingerprint(same) == expected
    changes = {
        "hidden sizes": ("model", "hidden_sizes", [400, 400]),
        "convolutions": ("model", "conv_channels", [32, 32]),
        "epochs": ("train", "epochs", 100),
        "steps": ("train", "steps", 2000),
        "batch size": ("train", "batch_size", 128),
        "optimiser": ("optimizer", "_target_", "torch.optim.SGD"),
        "learning rate": ("optimizer", "lr", 0.01),
        "validation fraction": ("task", "val_fraction", 0.1),
        "number of tasks": ("task", "n_tasks", 5),
        "optimiser kept across tasks": ("train", "reset_optimizer", False),
    }
    for change, (section, name, value) in changes.items():
        other = copy.deepcopy(vcl)
        other[section][name] = value
        assert benchmark_fingerprint(other) != expected, change
    assert benchmark_fingerprint(None) == "none"
