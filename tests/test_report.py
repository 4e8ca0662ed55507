"""The leaderboard: aggregation checked against numbers worked out by hand, then the files."""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import logging
import math
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cl_bayes import report
from cl_bayes.errors import UserError
from cl_bayes.report import README_BEGIN, README_END, build_report, main, mean_matrix, mean_std

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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
    """Table rows (not headers or rules) of the leaderboard tables, before the runs apart."""
    tables = markdown.split("## Runs not averaged")[0]
    lines = [line for line in tables.splitlines() if line.startswith("| ")]
    return [line for line in lines if not line.startswith("| #")]


# --- arithmetic -------------------------------------------------------------------------------


def test_mean_and_sample_std_by_hand():
    stat = mean_std([0.90, 0.94, 0.98])
    assert stat.n == 3
    assert math.isclose(stat.mean, 0.94) and math.isclose(stat.std, 0.04)
    # 1, 2, 6: mean 3, squared deviations 4 + 1 + 9 = 14, / (n - 1) = 7.
    assert math.isclose(mean_std([1, 2, 6]).std, math.sqrt(7))
    assert mean_std([0.5]) == report.Stat(0.5, None, 1)
    assert mean_std([None, float("nan"), 0.5, True]) == report.Stat(0.5, None, 1)
    assert mean_std([]) == report.Stat(None, None, 0)


def test_mean_matrix_ignores_unmeasured_cells_and_refuses_mixed_sizes():
    a = [[0.8, None], [0.6, 0.9]]
    b = [[1.0, 0.5], [0.4, 0.7]]
    expected = np.array([[0.9, 0.5], [0.5, 0.8]])
    np.testing.assert_allclose(mean_matrix([a, b]), expected)
    assert np.isnan(mean_matrix([a, a])[0, 1])
    assert mean_matrix([a, [[1.0]]]) is None


def test_groups_are_ranked_by_task_scenario_then_mean_acc_then_name():
    records = [
        make_record("a", 0.80, protocol="low"),
        make_record("b", 0.95, protocol="zeta"),
        make_record("c", 0.95, protocol="alpha"),
        make_record("d", 0.99, scenario="class"),
        make_record("e", 0.50, task="permuted_mnist", scenario="domain"),
    ]
    groups = report.summarize_groups(report.group_runs(records))
    keys = [(g.key.task, g.key.scenario, g.key.protocol) for g in groups]
    assert keys == [
        ("permuted_mnist", "domain", "p"),
        ("split_mnist", "class", "p"),
        ("split_mnist", "task", "alpha"),
        ("split_mnist", "task", "zeta"),
        ("split_mnist", "task", "low"),
    ]


# --- the Markdown leaderboard -----------------------------------------------------------------


def test_table_row_holds_the_hand_computed_means_and_stds(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds())
    # ACC 94.00 ± 4.00; BWT -2.00 ± 1.00; forgetting 3.00 ± sqrt(7) = 2.65; train 40 ± 10 s.
    assert rows_of(markdown) == [
        "| 1 | vcl | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 | 3.00 ± 2.65 | n/a | 40.0 ± 10.0 s |"
    ]
    assert (
        "| # | Method | Protocol | n | ACC (%) | BWT (%) | Forgetting (%) | FWT (%) |" in markdown
    )
    assert "## split_mnist · task-incremental (multi-head)" in markdown
    assert f"by `{COMMAND}`" in markdown
    assert "Intransigence" not in markdown and "ECE" not in markdown


def test_a_single_run_shows_no_std_and_long_runs_are_in_minutes(tmp_path):
    markdown, _ = generate(tmp_path, make_record("one", 0.88, train_seconds=(300.0, 420.0)))
    assert rows_of(markdown) == [
        "| 1 | vcl | p | 1 | 88.00 ± – | -1.00 ± – | 2.00 ± – | n/a | 12.0 ± – min |"
    ]


def test_failed_interrupted_and_running_runs_are_listed_apart_and_not_averaged(tmp_path):
    incomplete = [
        make_record(
            "p-seed3",
            0.10,
            status="failed",
            seed=3,
            train_seconds=(5.0,),
            error="TrainingDiverged: the loss became nan in task 2, epoch 3\nmore detail",
        ),
        make_record("p-seed4", 0.20, status="interrupted", seed=4, error="interrupted"),
        make_record("p-seed5", 0.30, status="running", seed=5, train_seconds=(5.0,)),
    ]
    markdown, html_text = generate(tmp_path, *three_seeds(), *incomplete)
    assert rows_of(markdown)[0].startswith("| 1 | vcl | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 |")
    failed = markdown.split("## Runs not averaged")[1]
    assert "| Run | Status | Tasks completed | Protocol | Reason |" in failed
    assert (
        "| p-seed3 | failed | 1/2 | p | TrainingDiverged: the loss became nan in task 2" in failed
    )
    assert "more detail" not in failed
    assert "| p-seed4 | interrupted | 2/2 | p | interrupted |" in failed
    assert "| p-seed5 | running | 1/2 | p | – |" in failed
    # Sorted by run id.
    assert failed.index("p-seed3") < failed.index("p-seed4") < failed.index("p-seed5")
    assert "Generated from 6 run records" in markdown
    assert "p-seed5" in html_text


def test_groups_are_separated_by_protocol_and_scenario(tmp_path):
    records = [
        *three_seeds("p"),
        make_record("q-seed0", 0.99, protocol="q"),
        make_record("q-seed1", 0.97, protocol="q", seed=1),
        make_record("class-seed0", 0.40, scenario="class"),
    ]
    markdown, _ = generate(tmp_path, *records)
    assert markdown.index("## split_mnist · class-incremental (single head)") < markdown.index(
        "## split_mnist · task-incremental (multi-head)"
    )
    rows = rows_of(markdown)
    assert rows[0].startswith("| 1 | vcl | p | 1 | 40.00 ± – |")  # the class table
    assert rows[1].startswith("| 1 | vcl | q | 2 | 98.00 ± 1.41 |")  # sqrt(2) / 100
    assert rows[2].startswith("| 2 | vcl | p | 3 | 94.00 ± 4.00 |")
    assert len(rows) == 3


def test_fwt_is_na_when_null_and_averaged_where_defined(tmp_path):
    records = [
        make_record("d0", 0.9, scenario="domain", fwt=0.05),
        make_record("d1", 0.9, scenario="domain", seed=1, fwt=0.07),
        make_record("t0", 0.9, scenario="task", fwt=None),
    ]
    markdown, _ = generate(tmp_path, *records)
    rows = rows_of(markdown)
    assert rows[0].endswith("| 6.00 ± 1.41 | 30.0 ± 0.0 s |")  # domain: FWT 5 and 7 %
    assert rows[1].endswith("| n/a | 30.0 ± – s |")  # task: FWT does not apply


def test_intransigence_and_other_summary_numbers_get_columns_when_present(tmp_path):
    records = [
        make_record("a0", 0.9, intransigence=0.01, gap=0.2, score=0.05),
        make_record("a1", 0.9, seed=1, intransigence=0.03, gap=0.4),
    ]
    markdown, _ = generate(tmp_path, *records)
    assert "| FWT (%) | Intransigence (%) | gap | score | Train time / run |" in markdown
    (row,) = rows_of(markdown)
    # Intransigence 1 and 3 %: std sqrt(2); gap (0.2, 0.4) in its own units: std sqrt(0.02);
    # score from one run only.
    assert "| 2.00 ± 1.41 | 0.3 ± 0.1414 | 0.05 ± – (n=1) |" in row


def test_a_seed_run_twice_counts_once_the_newer_run_kept_and_the_older_listed(tmp_path, caplog):
    again = make_record("p-seed1-again", 0.96, seed=1, updated_at="2026-02-01T00:00:00+00:00")
    with caplog.at_level(logging.WARNING, logger="cl_bayes.report"):
        markdown, html_text = generate(tmp_path, *three_seeds(), again)
    # Kept ACC 0.90, 0.96, 0.98: mean 94.67 %, std sqrt(((-14)^2 + 4^2 + 10^2) / 9 / 2) = 4.16 %.
    expected_std = np.std([0.90, 0.96, 0.98], ddof=1)
    assert math.isclose(100 * expected_std, 4.163, abs_tol=1e-3)
    (row,) = rows_of(markdown)
    assert row.startswith("| 1 | vcl | p | 3 | 94.67 ± 4.16 | -1.67 ± 1.15 | 3.00 ± 2.65 |")
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
    groups, superseded = report.drop_repeated_seeds(
        report.group_runs([old, new, tie_a, tie_b, *no_seed])
    )
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
    assert report.config_fingerprint(record["config"]) == expected
    assert report.config_fingerprint(make_record("s", seed=4, epochs=7)["config"]) == expected
    assert report.config_fingerprint(make_record("t", seed=3, epochs=8)["config"]) != expected
    assert report.config_fingerprint(None) == "none"


def test_an_option_added_later_at_its_old_value_keeps_the_fingerprint():
    before = make_record("r", seed=0, epochs=7)
    before["config"]["model"] = {"hidden_sizes": [100, 100]}
    local, weights = copy.deepcopy(before), copy.deepcopy(before)
    local["config"]["model"]["sampling"] = "local"
    weights["config"]["model"]["sampling"] = "weights"
    fingerprint = report.config_fingerprint(before["config"])
    assert report.config_fingerprint(local["config"]) == fingerprint
    assert report.config_fingerprint(weights["config"]) != fingerprint
    assert local["config"]["model"]["sampling"] == "local"  # the record itself is untouched


def test_settings_that_differ_under_one_protocol_give_labelled_rows(tmp_path):
    short = [make_record(f"short{s}", 0.80 + s / 100, seed=s, epochs=1) for s in range(2)]
    long = [make_record(f"long{s}", 0.95, seed=s, epochs=50) for s in range(3)]
    other = make_record("q0", 0.5, protocol="q")
    markdown, html_text = generate(tmp_path, *short, *long, other)
    short_fp = report.config_fingerprint(short[0]["config"])
    long_fp = report.config_fingerprint(long[0]["config"])
    assert short_fp != long_fp
    long_label = f"p (config {long_fp}: method.epochs=50, train.epochs=50)"
    short_label = f"p (config {short_fp}: method.epochs=1, train.epochs=1)"
    assert rows_of(markdown) == [
        f"| 1 | vcl | {long_label} | 3 | 95.00 ± 0.00 | -1.00 ± 0.00 | 2.00 ± 0.00 "
        "| n/a | 30.0 ± 0.0 s |",
        f"| 2 | vcl | {short_label} | 2 | 80.50 ± 0.71 | -1.00 ± 0.00 | 2.00 ± 0.00 "
        "| n/a | 30.0 ± 0.0 s |",
        "| 3 | vcl | q | 1 | 50.00 ± – | -1.00 ± – | 2.00 ± – | n/a | 30.0 ± – s |",
    ]
    assert "task, scenario, method, protocol and configuration" in markdown
    assert html.escape(short_label) in html_text


def test_a_setting_with_line_breaks_or_maths_keeps_the_table_and_plots_whole(tmp_path):
    plain = make_record("plain", 0.9)
    odd = copy.deepcopy(plain)
    odd["run_id"], odd["config"]["note"] = "odd", "x\ry | $\\bogus$"
    markdown, _ = generate(tmp_path, plain, odd)
    rows = rows_of(markdown)
    assert len(rows) == 2
    # JSON writes the carriage return as the two characters \r: the row stays one line
    assert any('note="x\\ry \\| $\\\\bogus$"' in row for row in rows)


def test_a_row_names_an_added_option_at_the_value_an_older_record_ran_with(tmp_path):
    older = make_record("older", 0.85)
    older["config"]["model"] = {"hidden_sizes": [100, 100]}  # written before model.sampling
    weights = copy.deepcopy(older)
    weights["run_id"], weights["config"]["model"]["sampling"] = "weights", "weights"
    markdown, _ = generate(tmp_path, older, weights)
    older_fp = report.config_fingerprint(older["config"])
    weights_fp = report.config_fingerprint(weights["config"])
    assert sorted(row.split(" | ")[2] for row in rows_of(markdown)) == sorted(
        [
            f"p (config {older_fp}: model.sampling=local)",
            f"p (config {weights_fp}: model.sampling=weights)",
        ]
    )


def test_distinguishing_settings_name_unset_values_and_cut_long_lists():
    base = {"seed": 0, "model": {"hidden_sizes": [100, 100]}, "train": {"epochs": 5}}
    wide = copy.deepcopy(base)
    wide["model"]["hidden_sizes"] = [256, 256]
    wide["train"].update(epochs=120, batch_size=None)
    wide["optimizer"] = {"lr": 0.01, "momentum": 0.9}
    assert report.distinguishing_settings([base, wide]) == [
        "model.hidden_sizes=[100, 100], optimizer.lr=unset, optimizer.momentum=unset, +2 more",
        "model.hidden_sizes=[256, 256], optimizer.lr=0.01, optimizer.momentum=0.9, +2 more",
    ]
    # a cut that would give two configurations one label names every setting instead
    abcd = [dict(zip("abcd", values, strict=True)) for values in ("1111", "1112", "2222")]
    assert report.distinguishing_settings(abcd) == [
        'a="1", b="1", c="1", d="1"',
        'a="1", b="1", c="1", d="2"',
        'a="2", b="2", c="2", +1 more',
    ]
    # values that read alike are told apart: a string against a number, null or a missing key
    assert report.distinguishing_settings([{"a": "5"}, {"a": 5}, {"a": None}, {}]) == [
        'a="5"',
        "a=5",
        "a=null",
        "a=unset",
    ]
    # a string that reads as a JSON float is quoted
    for word, number in (("NaN", float("nan")), ("Infinity", float("inf"))):
        assert report.distinguishing_settings([{"a": word}, {"a": number}]) == [
            f'a="{word}"',
            f"a={word}",
        ]
    full_batch, batches = {"train": {"batch_size": None}}, {"train": {"batch_size": 256}}
    assert report.distinguishing_settings([full_batch, batches, full_batch]) == [
        "train.batch_size=null",
        "train.batch_size=256",
        "train.batch_size=null",
    ]


def test_same_settings_with_different_seeds_and_machines_form_one_row(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds())
    configs = [r["config"] for r in three_seeds()]
    assert configs[0] != configs[1]  # seed, data, device and progress differ
    (row,) = rows_of(markdown)
    assert row.startswith("| 1 | vcl | p | 3 | 94.00 ± 4.00 |")


def test_regenerating_gives_byte_identical_files(tmp_path):
    records = [*three_seeds("p"), *three_seeds("q"), make_record("f", status="failed")]
    first = generate(tmp_path, *records, out="first")
    second = generate(tmp_path, *records, out="second")
    assert first == second
    assert sorted(os.listdir(tmp_path / "first")) == ["leaderboard.html", "leaderboard.md"]


def test_a_corrupt_or_foreign_json_file_is_skipped_with_a_warning(tmp_path, caplog):
    results = write_records(tmp_path / "results", *three_seeds())
    (results / "runs" / "broken.json").write_text('{"run_id": "half-writ')
    (results / "runs" / "list.json").write_text("[1, 2]")
    (results / "runs" / "other.json").write_text('{"run_id": "x", "status": "completed"}')
    with caplog.at_level(logging.INFO, logger="cl_bayes.report"):
        build_report(results, tmp_path / "out", None, COMMAND)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert any("broken.json" in w and "not readable as JSON" in w for w in warnings)
    assert any("list.json" in w and "not a JSON object" in w for w in warnings)
    assert any("other.json" in w and "no task, scenario" in w for w in warnings)
    assert "read 3 run records" in caplog.text and "skipped 3" in caplog.text
    markdown = (tmp_path / "out" / "leaderboard.md").read_text(encoding="utf-8")
    assert rows_of(markdown)[0].startswith("| 1 | vcl | p | 3 | 94.00 ± 4.00 |")


# --- the HTML page ----------------------------------------------------------------------------


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_html_is_self_contained_with_base64_png_plots(tmp_path):
    records = [
        *three_seeds("p"),
        *three_seeds("q"),
        make_record("c0", 0.5, scenario="class"),
        make_record("f", status="failed"),
    ]
    _, page = generate(tmp_path, *records)
    parser = PageParser()
    parser.feed(page)
    parser.close()
    # Two tables with 2 + 1 groups: 3 heatmaps + 2 x (average accuracy, forgetting).
    assert len(parser.images) >= 3 + 2 * 2
    for src in parser.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :], validate=True).startswith(PNG_SIGNATURE)
    assert parser.tags.count("table") == 3  # two leaderboards and the failed runs
    assert "style" in parser.tags
    assert "script" not in parser.tags and "link" not in parser.tags
    assert "94.00 ± 4.00" in page


# --- command line and README ------------------------------------------------------------------


README = "# Project\n\nIntro.\n\n## Leaderboard\n\n{begin}\nold table\n{end}\n\n## After\n"


def test_readme_block_is_replaced_and_regenerating_keeps_it(tmp_path):
    results = write_records(tmp_path / "results", *three_seeds())
    readme = tmp_path / "README.md"
    readme.write_text(README.format(begin=README_BEGIN, end=README_END))
    argv = ["--results", str(results), "--readme", str(readme)]
    assert main(argv) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Project\n\nIntro.\n\n## Leaderboard\n\n" + README_BEGIN + "\n")
    assert text.endswith(README_END + "\n\n## After\n")
    block = text.split(README_BEGIN)[1].split(README_END)[0]
    assert "old table" not in block
    assert "### split_mnist · task-incremental (multi-head)" in block
    assert "| 1 | vcl | p | 3 | 94.00 ± 4.00 |" in block
    assert "Runs not averaged" not in block
    assert "python -m cl_bayes.report --results" in block
    # --out defaults to the results folder.
    assert (results / "leaderboard.md").is_file() and (results / "leaderboard.html").is_file()
    assert main(argv) == 0
    assert readme.read_text(encoding="utf-8") == text


def test_readme_without_markers_is_a_clear_error_and_nothing_is_written(tmp_path, caplog):
    results = write_records(tmp_path / "results", *three_seeds())
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\n{README_END}\n")
    with pytest.raises(UserError, match="README.md needs exactly one line <!-- leaderboard:begin"):
        build_report(results, tmp_path / "out", readme, COMMAND)
    assert not (tmp_path / "out").exists()
    assert readme.read_text() == f"# Project\n\n{README_END}\n"
    assert main(["--results", str(results), "--readme", str(readme)]) == 2
    assert README_BEGIN in caplog.text and README_END in caplog.text


def test_no_records_is_one_clear_error_from_the_command_line(tmp_path):
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cl_bayes.report", "--results", str(empty)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert f"no run records in {empty / 'runs'}" in out
    assert "python -m cl_bayes task=split_mnist" in out
    assert sorted(os.listdir(tmp_path)) == ["empty"]
