"""The Markdown leaderboard: rows holding the hand-computed numbers, the runs listed apart."""

from __future__ import annotations

from cl_bayes.report.groups import benchmark_fingerprint
from cl_bayes.report.tables import CALIBRATION_LEGEND, CURVES_LEGEND, LEGEND
from tests.report.sample_records import (
    COMMAND,
    calibrated_seeds,
    generate,
    make_record,
    on_benchmark,
    rows_of,
    three_seeds,
)


def test_table_row_holds_the_hand_computed_means_and_stds(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds())
    # ACC 94.00 ± 4.00; BWT -2.00 ± 1.00; forgetting 3.00 ± sqrt(7) = 2.65; train 40 ± 10 s.
    assert rows_of(markdown) == [
        "| 1 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 "
        "| 3.00 ± 2.65 | n/a | 40.0 ± 10.0 s |"
    ]
    assert (
        "| # | Method | Scenario | Protocol | n | ACC (%) | BWT (%) | Forgetting (%) "
        "| FWT (%) |" in markdown
    )
    assert "## split_mnist · task-incremental (multi-head) · p" in markdown
    assert f"by `{COMMAND}`" in markdown
    assert "Intransigence" not in markdown and "ECE" not in markdown


def test_a_single_run_shows_no_std_and_long_runs_are_in_minutes(tmp_path):
    markdown, _ = generate(tmp_path, make_record("one", 0.88, train_seconds=(300.0, 420.0)))
    assert rows_of(markdown) == [
        "| 1 | vcl | task-IL, multi-head | p | 1 | 88.00 ± – | -1.00 ± – | 2.00 ± – | n/a "
        "| 12.0 ± – min |"
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
    assert rows_of(markdown)[0].startswith(
        "| 1 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 |"
    )
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
    assert markdown.index("## split_mnist · class-incremental (single head) · p") < markdown.index(
        "## split_mnist · task-incremental (multi-head) · p"
    )
    rows = rows_of(markdown)
    assert rows[0].startswith("| 1 | vcl | class-IL, single head | p | 1 | 40.00 ± – |")  # class
    assert rows[1].startswith(
        "| 1 | vcl | task-IL, multi-head | q | 2 | 98.00 ± 1.41 |"
    )  # sqrt(2) / 100
    assert rows[2].startswith("| 2 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 |")
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
    "runs are listed apart and never averaged in. A table ranks the groups of one task, "
    "scenario and benchmark (task data, network size, training schedule and optimiser), "
    "named after the protocol most of its groups ran. Train time / run: on the CPU unless a "
    "GPU is named after it.\n\n"
    "## split_mnist · class-incremental (single head) · p\n\n"
    "| # | Method | Scenario | Protocol | n | ACC (%) | BWT (%) | Forgetting (%) "
    "| FWT (%) | Train time / "
    "run |\n|---:|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    "| 1 | vcl | class-IL, single head | p | 1 | 50.00 ± – | -1.00 ± – | 2.00 ± – | n/a "
    "| 30.0 ± – s |\n\n"
    "## split_mnist · task-incremental (multi-head) · p\n\n"
    "| # | Method | Scenario | Protocol | n | ACC (%) | BWT (%) | Forgetting (%) "
    "| FWT (%) | Train time / "
    "run |\n|---:|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    "| 1 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 | 3.00 ± 2.65 | n/a "
    "| 40.0 ± 10.0 s |\n\n"
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
        "| 1 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 | -2.00 ± 1.00 "
        "| 3.00 ± 2.65 | n/a | n/a | n/a |"
        " 40.0 ± 10.0 s |",
        "| 2 | vcl | task-IL, multi-head | cal | 2 | 90.00 ± 0.00 | -1.00 ± 0.00 "
        "| 2.00 ± 0.00 | n/a | 15.00 ± 7.07 |"
        " 0.250 ± 0.000 | 30.0 ± 0.0 s |",
    ]


def test_calibrated_groups_get_their_ece_and_entropy_after_each_task(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds(), *calibrated_seeds())
    table = markdown.split(CURVES_LEGEND)[1].split("## Runs not averaged")[0].strip()
    # ECE (2 + 4) / 2 = 3 % and (10 + 20) / 2 = 15 %; entropy 0.2 and 0.4 nats. The group
    # recorded before calibration was measured has no row; no group has a mutual information.
    assert table.splitlines() == [
        "| Method | Scenario | Protocol | n | ECE (%) after each task "
        "| Mean predictive entropy (nats) after each task |",
        "|---|---|---|---:|---|---|",
        "| vcl | task-IL, multi-head | cal | 2 | 3.00 · 15.00 | 0.200 · 0.400 |",
    ]


def test_a_group_partly_recorded_before_calibration_averages_the_runs_that_measured_it(tmp_path):
    old = make_record("cal-seed2", seed=2, protocol="cal")
    markdown, _ = generate(tmp_path, *calibrated_seeds(), old)
    row = markdown.split(CURVES_LEGEND)[1].split("## Runs not averaged")[0].strip().splitlines()[2]
    assert row == (
        "| vcl | task-IL, multi-head | cal | 3 | 3.00 · 15.00 (n=2) | 0.200 · 0.400 (n=2) |"
    )


def test_no_table_after_each_task_without_calibrated_runs(tmp_path):
    markdown, _ = generate(tmp_path, *three_seeds())
    assert CURVES_LEGEND not in markdown and "after each task" not in markdown


VCL_NETWORK, VCL_EPOCHS = (256, 256), 120  # vcl_split_mnist: 120 full-batch epochs per task
THREE_SCENARIOS = {"hidden_sizes": (400, 400), "epochs": 5, "steps": 2000, "batch_size": 128}


def headings(markdown: str) -> list[str]:
    """The tables' headings, in order."""
    return [line for line in markdown.splitlines() if line.startswith("## split_mnist")]


def test_two_benchmarks_of_one_task_and_scenario_give_two_tables_each_ranked_alone(tmp_path):
    vcl_protocol = [
        *(on_benchmark(r, VCL_NETWORK, VCL_EPOCHS) for r in three_seeds("vcl_split_mnist")),
        on_benchmark(
            make_record("vcl-ft", 0.80, method="finetune", protocol="vcl_split_mnist"),
            VCL_NETWORK,
            VCL_EPOCHS,
            model="cl_bayes.models.mlp.MLP",
        ),
    ]
    three_scenarios = [
        on_benchmark(
            make_record(run_id, acc, method=method, protocol="three_scenarios_split_mnist"),
            model="cl_bayes.models.mlp.MLP",
            **THREE_SCENARIOS,
        )
        for run_id, acc, method in [("ts-ewc", 0.99, "ewc"), ("ts-ft", 0.95, "finetune")]
    ]
    markdown, html_text = generate(tmp_path, *vcl_protocol, *three_scenarios)
    assert headings(markdown) == [
        "## split_mnist · task-incremental (multi-head) · three_scenarios_split_mnist",
        "## split_mnist · task-incremental (multi-head) · vcl_split_mnist",
    ]
    ranked = [row.split(" | ")[:5] for row in rows_of(markdown)]
    assert ranked == [
        ["| 1", "ewc", "task-IL, multi-head", "three_scenarios_split_mnist", "1"],
        ["| 2", "finetune", "task-IL, multi-head", "three_scenarios_split_mnist", "1"],
        ["| 1", "vcl", "task-IL, multi-head", "vcl_split_mnist", "3"],
        ["| 2", "finetune", "task-IL, multi-head", "vcl_split_mnist", "1"],
    ]
    assert html_text.count("<h2>split_mnist · task-incremental (multi-head) · ") == 2


def test_protocols_of_one_schedule_and_network_share_a_table_named_by_the_most_groups(tmp_path):
    records = [
        make_record("coreset", 0.98, protocol="vcl_split_mnist_random_coreset"),
        make_record("vcl", 0.97, protocol="vcl_split_mnist"),
        make_record("ft", 0.90, method="finetune", protocol="vcl_split_mnist"),
    ]
    model = {"model": "cl_bayes.models.mlp.MLP"}
    records = [
        on_benchmark(r, VCL_NETWORK, VCL_EPOCHS, **(model if r["run_id"] == "ft" else {}))
        for r in records
    ]
    markdown, _ = generate(tmp_path, *records)
    assert headings(markdown) == [
        "## split_mnist · task-incremental (multi-head) · vcl_split_mnist"
    ]
    assert [row.split(" | ")[1] for row in rows_of(markdown)] == ["vcl", "vcl", "finetune"]
    # one group each: the shortest name
    tie = [
        on_benchmark(make_record("k", protocol="vcl_split_mnist_k_center_coreset"), (8,), 1),
        on_benchmark(make_record("r", protocol="vcl_split_mnist_random_coreset"), (8,), 1),
    ]
    markdown, _ = generate(tmp_path / "tie", *tie)
    assert headings(markdown) == [
        "## split_mnist · task-incremental (multi-head) · vcl_split_mnist_random_coreset"
    ]


def test_benchmarks_whose_names_collide_are_told_apart_by_their_fingerprints(tmp_path):
    fast = on_benchmark(make_record("fast", protocol="p"), (100, 100), 10)
    full = on_benchmark(make_record("full", protocol="p"), (100, 100), 100)
    markdown, _ = generate(tmp_path, fast, full)
    titles = headings(markdown)
    fingerprints = sorted(benchmark_fingerprint(r["config"]) for r in (fast, full))
    assert titles == [
        f"## split_mnist · task-incremental (multi-head) · p (benchmark {fp})"
        for fp in fingerprints
    ]


def test_train_time_names_the_gpu_its_runs_trained_on(tmp_path):
    def on_gpu(record, name="NVIDIA H200", device="cuda"):
        return {**record, "device": device, "device_name": name}

    all_on_gpu = [on_gpu(r) for r in three_seeds("g")]
    some_on_gpu = three_seeds("m")
    some_on_gpu[1] = on_gpu(some_on_gpu[1], device="cuda:1")
    on_cpu = [{**r, "device": "cpu", "device_name": "Intel Xeon (2 cores)"} for r in three_seeds()]
    markdown, _ = generate(tmp_path, *all_on_gpu, *some_on_gpu, *on_cpu)
    times = {row.split(" | ")[3]: row.split(" | ")[-1] for row in rows_of(markdown)}
    assert times == {
        "g": "40.0 ± 10.0 s (NVIDIA H200) |",
        "m": "40.0 ± 10.0 s (1 of 3 on NVIDIA H200) |",
        "p": "40.0 ± 10.0 s |",
    }
    assert "on the CPU unless a GPU is named after it" in markdown
