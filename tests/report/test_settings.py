"""The settings that tell apart the configurations of one protocol, as rows name them."""

from __future__ import annotations

import copy
import html

from cl_bayes.report.groups import config_fingerprint
from cl_bayes.report.settings import distinguishing_settings
from tests.report.sample_records import generate, make_record, rows_of, three_seeds


def with_beta(record: dict, beta: float) -> dict:
    """``record`` with ``method.beta`` set: a method setting, which keeps the benchmark."""
    record["config"]["method"]["beta"] = beta
    return record


def test_settings_that_differ_under_one_protocol_give_labelled_rows(tmp_path):
    short = [with_beta(make_record(f"short{s}", 0.80 + s / 100, seed=s), 1) for s in range(2)]
    long = [with_beta(make_record(f"long{s}", 0.95, seed=s), 50) for s in range(3)]
    other = make_record("q0", 0.5, protocol="q")
    markdown, html_text = generate(tmp_path, *short, *long, other)
    short_fp = config_fingerprint(short[0]["config"])
    long_fp = config_fingerprint(long[0]["config"])
    assert short_fp != long_fp
    long_label = f"p (config {long_fp}: method.beta=50)"
    short_label = f"p (config {short_fp}: method.beta=1)"
    assert rows_of(markdown) == [
        f"| 1 | vcl | task-IL, multi-head | {long_label} | 3 | 95.00 ± 0.00 "
        f"| -1.00 ± 0.00 | 2.00 ± 0.00 "
        "| n/a | 30.0 ± 0.0 s |",
        f"| 2 | vcl | task-IL, multi-head | {short_label} | 2 | 80.50 ± 0.71 "
        f"| -1.00 ± 0.00 | 2.00 ± 0.00 "
        "| n/a | 30.0 ± 0.0 s |",
        "| 3 | vcl | task-IL, multi-head | q | 1 | 50.00 ± – | -1.00 ± – | 2.00 ± – | n/a "
        "| 30.0 ± – s |",
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
    older_fp = config_fingerprint(older["config"])
    weights_fp = config_fingerprint(weights["config"])
    assert sorted(row.split(" | ")[3] for row in rows_of(markdown)) == sorted(
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
    assert distinguishing_settings([base, wide]) == [
        "model.hidden_sizes=[100, 100], optimizer.lr=unset, optimizer.momentum=unset, +2 more",
        "model.hidden_sizes=[256, 256], optimizer.lr=0.01, optimizer.momentum=0.9, +2 more",
    ]
    # a cut that would give two configurations one label names every setting instead
    abcd = [dict(zip("abcd", values, strict=True)) for values in ("1111", "1112", "2222")]
    assert distinguishing_settings(abcd) == [
        'a="1", b="1", c="1", d="1"',
        'a="1", b="1", c="1", d="2"',
        'a="2", b="2", c="2", +1 more',
    ]
    # values that read alike are told apart: a string against a number, null or a missing key
    assert distinguishing_settings([{"a": "5"}, {"a": 5}, {"a": None}, {}]) == [
        'a="5"',
        "a=5",
        "a=null",
        "a=unset",
    ]
    # a string that reads as a JSON float is quoted
    for word, number in (("NaN", float("nan")), ("Infinity", float("inf"))):
        assert distinguishing_settings([{"a": word}, {"a": number}]) == [
            f'a="{word}"',
            f"a={word}",
        ]
    full_batch, batches = {"train": {"batch_size": None}}, {"train": {"batch_size": 256}}
    assert distinguishing_settings([full_batch, batches, full_batch]) == [
        "train.batch_size=null",
        "train.batch_size=256",
        "train.batch_size=null",
    ]


def test_same_settings_with_different_seeds_and_machines_form_one_row(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds())
    configs = [r["config"] for r in three_seeds()]
    assert configs[0] != configs[1]  # seed, data, device and progress differ
    (row,) = rows_of(markdown)
    assert row.startswith("| 1 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 |")
