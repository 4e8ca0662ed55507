"""Which completed runs are averaged together, and which are listed apart.

A group is the runs of one task sequence, scenario, method, protocol and configuration
(:class:`GroupKey`); of several runs of one seed in a group, only the newest is averaged.
Groups are ranked together where they ran one benchmark (:func:`benchmark_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

from cl_bayes.record import experiment_config


class GroupKey(NamedTuple):
    """What makes runs comparable: task sequence, scenario, method, protocol, configuration.

    ``config`` is the fingerprint of the record's configuration (:func:`config_fingerprint`).
    """

    task: str
    scenario: str
    method: str
    protocol: str
    config: str


@dataclass(frozen=True)
class NotAveraged:
    """A run listed apart from the tables: its record, the status shown and why."""

    record: dict[str, Any]
    status: str
    reason: str


def config_fingerprint(config: Any) -> str:
    """First 6 hex digits of the SHA-1 of :func:`experiment_config` as sorted JSON.

    ``none`` for a record without a ``config`` object.
    """
    if not isinstance(config, dict):
        return "none"
    text = json.dumps(experiment_config(config), sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]


# The model settings that fix the network's size (a CNN's convolutions too). What its layers
# are (Bayesian, with dropout, plain) belongs to the method and leaves the benchmark as it is.
NETWORK_SETTINGS = ("hidden_sizes", "conv_channels", "pool_every")
# The training schedule: a missing setting counts as null (``train.steps`` came later).
SCHEDULE_SETTINGS = ("epochs", "steps", "batch_size")


def benchmark_fingerprint(config: Any) -> str:
    """The benchmark a record's run belongs to: 6 hex digits of the SHA-1 of its settings.

    Runs of one benchmark share the whole task sequence node (``task``: data, split, number
    of tasks, training size, validation fraction), the network's size (``model``
    :data:`NETWORK_SETTINGS`), the training schedule (``train`` :data:`SCHEDULE_SETTINGS`)
    and the optimiser (``optimizer._target_`` and ``lr``, and ``train.reset_optimizer`` where
    it is false: one optimiser kept across tasks). Method settings, and the kind of
    network (VCL's Bayesian MLP, MC dropout's or the deterministic MLP of one size), never
    tell benchmarks apart, so that the leaderboard ranks them in one table; different
    schedules or networks make different tables. ``none`` for a record without a ``config``.
    """
    if not isinstance(config, dict):
        return "none"
    kept = experiment_config(config)

    def node(name: str) -> dict[str, Any]:
        value = kept.get(name)
        return value if isinstance(value, dict) else {}

    model, train, optimizer = node("model"), node("train"), node("optimizer")
    settings = {
        "task": kept.get("task"),
        "model": {k: model[k] for k in NETWORK_SETTINGS if k in model},
        "train": {k: train.get(k) for k in SCHEDULE_SETTINGS},
        "optimizer": {k: optimizer.get(k) for k in ("_target_", "lr")},
    }
    if train.get("reset_optimizer") is False:  # one optimiser kept across tasks: named only
        settings["train"]["reset_optimizer"] = False  # then, so earlier benchmarks keep theirs
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]


def group_key(record: dict[str, Any]) -> GroupKey:
    """The group a completed record belongs to."""
    names = GroupKey._fields[:-1]
    return GroupKey(*(str(record[n]) for n in names), config_fingerprint(record.get("config")))


def group_name(key: GroupKey) -> str:
    """``task/scenario/method/protocol/config``, as warnings name a group."""
    return "/".join(key)


def group_runs(records: Sequence[dict[str, Any]]) -> dict[GroupKey, list[dict[str, Any]]]:
    """Completed ``records`` by :class:`GroupKey`, in the order the records come."""
    groups: dict[GroupKey, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[group_key(record)].append(record)
    return dict(groups)


def newest(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run updated last: greatest ``updated_at``, then greatest ``run_id``.

    ``updated_at`` is ISO 8601 in UTC (``cl_bayes.record.utc_now``), so its text sorts by time.
    """
    return max(runs, key=lambda r: (str(r.get("updated_at") or ""), str(r["run_id"])))


def drop_repeated_seeds(
    groups: dict[GroupKey, list[dict[str, Any]]],
) -> tuple[dict[GroupKey, list[dict[str, Any]]], list[NotAveraged]]:
    """Per group, one run per seed: the :func:`newest`; the others are ``superseded``.

    Runs without a seed are all kept. Returns the groups (runs in their order) and the
    superseded runs, each with a reason naming the run kept in its place.
    """
    kept_groups, superseded = {}, []
    for key, runs in groups.items():
        by_seed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for run in runs:
            if run.get("seed") is not None:
                by_seed[json.dumps(run["seed"])].append(run)
        dropped = set()
        for seed, same_seed in by_seed.items():
            kept = newest(same_seed)
            for run in same_seed:
                if run is not kept:
                    dropped.add(id(run))
                    reason = f"seed {seed} run again: the newer run {kept['run_id']} is averaged"
                    superseded.append(NotAveraged(run, "superseded", reason))
        kept_groups[key] = [run for run in runs if id(run) not in dropped]
    return kept_groups, superseded


def not_averaged(
    incomplete: Sequence[dict[str, Any]], superseded: Sequence[NotAveraged]
) -> list[NotAveraged]:
    """The runs listed apart, sorted by run id.

    The reason of an ``incomplete`` run is the first line of its error (``–`` if none); the
    ``superseded`` runs keep theirs.
    """
    runs = [*superseded]
    for r in incomplete:
        error = (str(r.get("error") or "").strip().splitlines() or ["–"])[0]
        runs.append(NotAveraged(r, str(r["status"]), error))
    return sorted(runs, key=lambda run: str(run.record["run_id"]))
