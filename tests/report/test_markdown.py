"""The Markdown leaderboard: rows holding the hand-computed numbers, the runs listed apart."""

from __future__ import annotations

from cl_bayes.report.tables import CALIBRATION_LEGEND, LEGEND
from tests.report.sample_records import (
    COMMAND,
    calibrated_seeds,
    generate,
    make_record,
    rows_of,
    three_seeds,
)


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


# leaderboard.md of three_seeds() and one class-incremental run, as written before calibration
# was measured: records without it must still give exactly this.
BEFORE_CALIBRATION = (
    "# Leaderboard\n\nA row is a group: the completed runs of one task, scenario, method, "
    "protocol and configuration (where one protocol was run with different settings, its "
    "fingerprint is shown, with the settings that differ: (config …: key=value)). Mean ± "
    "sample standard deviation over the runs of the group, one per seed (the newest where a "
    "seed was run again); n: number of runs; – in place of the std where a group has a "
    "single run. ACC, BWT, forgetting, FWT and intransigence in % (formulas in "
    "cl_bayes/metrics.py); n/a: not applicable. Failed, interrupted, running and superseded "
    "runs are listed apart and never averaged in.\n\n"
    "## split_mnist · class-incremental (single head)\n\n"
    "| # | Method | Protocol | n | ACC (%) | BWT (%) | Forgetting (%) | FWT (%) | Train time / "
    "run |\n|---:|---|---|---:|---:|---:|---:|---:|---:|\n"
    "| 1 | vcl | p | 1 | 50.00 ± – | -1.00 ± – | 2.00 ± – | n/a | 30.0 ± – s |\n\n"
    "## split_mnist · task-incremental (multi-head)\n\n"
    "| # | Method | Protocol | n | ACC (%) | BWT (%) | Forgetting (%) | FWT (%) | Train time / "
    "run |\n|---:|---|---|---:|---:|---:|---:|---:|---:|\n"
    "| 1 | vcl | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 | 3.00 ± 2.65 | n/a | 40.0 ± 10.0 s |\n\n"
    "## Runs not averaged\n\nNone.\n\n"
    f"Generated from 4 run records by `{COMMAND}`.\n"
)


def test_records_without_calibration_give_the_leaderboard_they_gave_before(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds(), make_record("c0", 0.5, scenario="class"))
    assert markdown == BEFORE_CALIBRATION


def test_calibration_columns_bring_their_sentence_into_the_legend(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds(), *calibrated_seeds())
    legend = markdown.split("\n\n")[1]
    assert legend == f"{LEGEND} {CALIBRATION_LEGEND}"
    assert "ECE in % (top label, 15 equal-width confidence bins, L1; Guo et al. 2017)" in legend
    assert "| ECE (%) | NLL |" in markdown
    # Older records beside calibrated ones in one table: n/a in the calibration columns.
    assert rows_of(markdown) == [
        "| 1 | vcl | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 | 3.00 ± 2.65 | n/a | n/a | n/a |"
        " 40.0 ± 10.0 s |",
        "| 2 | vcl | cal | 2 | 90.00 ± 0.00 | -1.00 ± 0.00 | 2.00 ± 0.00 | n/a | 15.00 ± 7.07 |"
        " 0.250 ± 0.000 | 30.0 ± 0.0 s |",
    ]
