"""The logger interface, and the logger that logs nothing (``logger=none``, the default).

The loop in ``cl_bayes.run`` calls::

    logger.start(record, output_dir)            # once the run record exists
    logger.log_epoch(task_id, epoch, metrics)   # after every training epoch, while `active`
    logger.log_task(task_id, record)            # after every task, once its row is recorded
    logger.finish(record)                       # always, in a ``finally`` block

The run record (``cl_bayes.record``) stays the reference result: a logger only mirrors it
elsewhere, and a logger that fails must never stop or lose a run. A logger keeps its state on
the instance (one per run), so Hydra can run many jobs in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


class Logger:
    """Logs nothing. Subclasses send a run's progress to an experiment tracker."""

    @property
    def active(self) -> bool:
        """Whether :meth:`log_epoch` records anything (the loop skips per-epoch work if not)."""
        return False

    def start(self, record: dict[str, Any], output_dir: Path) -> None:
        """Begin logging the run of ``record`` (fresh or resumed) writing to ``output_dir``."""

    def log_epoch(self, task_id: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """Training metrics after epoch ``epoch`` (from 0) of task ``task_id``.

        ``metrics`` holds the epoch's ``loss`` and whatever the method adds (VCL: ``kl``,
        ``kl_term``).
        """

    def log_task(self, task_id: int, record: dict[str, Any]) -> None:
        """Evaluation after task ``task_id``: row ``task_id`` of the record's matrices is filled.

        The record's ``accuracy_matrix``, its ``uncertainty`` matrices, ``reliability_bins``
        and ``unseen_auroc`` (``cl_bayes.run``) hold the rows of the tasks trained so far.
        """

    def finish(self, record: dict[str, Any]) -> None:
        """Log the final (or last written) record and close; called however the run ended."""
