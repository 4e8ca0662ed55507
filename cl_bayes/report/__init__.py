"""Leaderboard: run records -> Markdown and HTML tables and plots.

``python -m cl_bayes.report [--results DIR] [--out DIR] [--readme PATH]`` reads every run
record ``DIR/runs/*.json`` (see ``cl_bayes.record``; ``DIR`` defaults to ``results``),
groups the completed runs by (task, scenario, method, protocol, configuration) and writes, in
``--out`` (default ``DIR``):

- ``leaderboard.md``: one table per task, scenario and benchmark (task data, network size,
  training schedule and optimiser: :func:`cl_bayes.report.groups.benchmark_fingerprint`),
  named after the protocol most of its groups ran, best mean ACC first, then the runs not
  averaged in (failed, interrupted, still running, or superseded by a newer run of their seed);
- ``leaderboard.html``: the same tables and, as PNG images embedded in the page, the mean
  accuracy matrix of each group, the average accuracy after each task and the forgetting of
  each group; where runs measured calibration, also the ECE after each task and a
  reliability diagram of each group (its runs' bins after the last task, pooled).

``--readme PATH`` also puts the tables between the lines ``<!-- leaderboard:begin -->`` and
``<!-- leaderboard:end -->`` of a Markdown file.

The configuration of a run is told by a fingerprint: the first 6 hex digits of the SHA-1 of
its record's ``config`` as sorted JSON, leaving out ``seed``, ``hydra`` and the keys that say
where things are rather than what the experiment is (``cl_bayes.record.LOCAL_KEYS``, at any depth:
``method.progress`` is ``${progress}``). Runs of one protocol with different settings (e.g.
``+experiment=vcl_split_mnist train.epochs=1``) thus form groups of their own; the Protocol
cell shows the fingerprint, and the settings in which the group differs from the others,
``vcl_split_mnist (config 3f2a1c: method.epochs=1, train.epochs=1)``, only where one (task,
scenario, method, protocol) has several (at most three settings are named, then how many
more, unless two rows would then read alike). A group averages one run per seed: of several
completed runs with the same seed, the newest (latest ``updated_at``, then greatest
``run_id``) is kept and the others are listed apart as ``superseded``, with a warning.

A table cell is ``mean ± std`` over the runs of a group, ``std`` being the sample standard
deviation (``ddof=1``). A group of a single run shows ``–`` in place of the std, which is not
defined for one value. The summary metrics (ACC, BWT, forgetting, FWT, intransigence, ...)
are those of ``cl_bayes.summary.SUMMARY_METRICS``, in its order, units and number formats, as
the run report prints them; any other number a record's ``summary`` holds gets a column of its
own, in its own units. The calibration columns (ECE, NLL, Brier, unseen-task AUROC) and the
legend's sentence on them appear only where some run has them. ``n/a`` marks a metric that
does not apply (FWT where a task's outputs are untrained before it, any metric of a
single-task run). A metric that only some
runs of a group have is averaged over those, and the cell says over how many: ``(n=2)``.
Train time is the sum of ``train_seconds`` over the tasks of a run, averaged over the runs,
with the accelerator (the record's ``device_name``) named where runs of the group trained on one.

The arithmetic (grouping and aggregation) lives in small pure functions, apart from the
rendering. The files depend only on the records and on the command line, so regenerating them
from the same records gives byte-identical files. The modules, in the order the data flows:

- ``records``: reading and validating the run records;
- ``groups``: which runs are averaged together (one per seed), which are listed apart;
- ``settings``: the settings that tell apart the configurations of one protocol;
- ``aggregate``: means and standard deviations of each group, the ranking;
- ``tables``: the cell texts that the Markdown and HTML tables share;
- ``markdown``, ``plots``, ``html_page``: ``leaderboard.md`` and the README block,
  the figures, ``leaderboard.html``;
- ``cli``: :func:`build_report` (records to files) and the command line, :func:`main`.
"""

from cl_bayes.report.cli import build_report, main

__all__ = ["build_report", "main"]
