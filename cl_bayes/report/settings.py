"""The settings that tell apart groups of one protocol run with different configurations."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Sequence

from cl_bayes.record import ADDED_OPTIONS, config_section, experiment_config

# How many of the settings that tell a group apart its Protocol cell names.
SETTINGS_SHOWN = 3
# A string value a label shows bare; others (and words JSON reads otherwise) go in quotes.
PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_./:+-]*")
JSON_WORDS = frozenset({"true", "false", "null", "NaN", "Infinity", "unset"})


def flat_settings(config: Any) -> dict[tuple[str, ...], Any]:
    """The settings of a record's ``config`` as ``{key path: value}``.

    What :func:`experiment_config` keeps, with each :data:`ADDED_OPTIONS` entry that it
    leaves out, or that an older record lacks, at the value the run had (where the option's
    section exists).
    """
    flat: dict[tuple[str, ...], Any] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, (*path, str(key)))
        else:
            flat[path] = node

    kept = experiment_config(config) if isinstance(config, dict) else {}
    for key, value in kept.items():
        walk(value, (str(key),))
    for (*parents, name), value in ADDED_OPTIONS.items():
        if config_section(kept, parents) is not None:
            flat.setdefault((*parents, name), value)
    return flat


def shown_value(value: Any) -> str:
    """A setting's value as a label shows it: plain words bare, anything else as JSON."""
    if isinstance(value, str) and PLAIN_WORD.fullmatch(value) and value not in JSON_WORDS:
        return value
    return json.dumps(value, sort_keys=True)


def distinguishing_settings(configs: Sequence[Any]) -> list[str]:
    """For each of ``configs``, ``key=value`` of the settings in which they are not all equal.

    Sorted by key, at most :data:`SETTINGS_SHOWN` of them, then ``+N more`` (all of them
    where the cut would give two configurations the same label); ``unset`` for a setting a
    configuration does not have. Plain words are shown bare, other values as JSON.
    """
    flats = [flat_settings(config) for config in configs]
    missing = object()

    def compared(flat: dict[tuple[str, ...], Any], path: tuple[str, ...]) -> str:
        value = flat.get(path, missing)
        return "" if value is missing else json.dumps(value, sort_keys=True)

    paths = sorted(set().union(*flats))
    differing = [p for p in paths if len({compared(flat, p) for flat in flats}) > 1]
    full = [
        [f"{'.'.join(p)}={'unset' if p not in flat else shown_value(flat[p])}" for p in differing]
        for flat in flats
    ]
    cut = [
        ", ".join([*parts[:SETTINGS_SHOWN], f"+{len(parts) - SETTINGS_SHOWN} more"])
        if len(parts) > SETTINGS_SHOWN
        else ", ".join(parts)
        for parts in full
    ]
    repeated = {label for label, count in Counter(cut).items() if count > 1}
    return [
        ", ".join(parts) if label in repeated else label
        for parts, label in zip(full, cut, strict=True)
    ]
