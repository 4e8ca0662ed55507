"""Around one job of the command line: how a user error is shown, and what a failed start leaves.

A user error is one line on stderr (and in the job's log file). A start that fails before the
run has written anything removes the output directory Hydra made for it
(:class:`FreshOutputDir`), so a mistyped option leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What Hydra saves in a job's output subdirectory (``hydra.output_subdir``, ``.hydra``).
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def report(message: str) -> None:
    """Show the one line of a user error: on stderr, and in the job's log files if it has any.

    Hydra's console handler writes to stdout; errors go to stderr, as Hydra's own do.
    """
    print(message, file=sys.stderr, flush=True)
    record = logging.LogRecord("cl_bayes", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@dataclass(frozen=True)
class FreshOutputDir:
    """A job's output directory that holds only what Hydra wrote for this start.

    That is the saved configuration (``<hydra_subdir>/config.yaml``, ``hydra.yaml``,
    ``overrides.yaml``) and the job's log files, still empty. A start that fails on a user
    error before the run writes anything removes it again (:meth:`remove`), so a mistyped
    option leaves no empty output directory behind.
    """

    path: Path
    hydra_subdir: str | None
    files: frozenset[Path]

    @classmethod
    def find(cls, path: Path, hydra_subdir: str | None) -> FreshOutputDir | None:
        """``path`` as Hydra left it for this start, or ``None`` when it holds anything else.

        Call it as the job starts, before the run writes anything: a directory that already
        held other files (an earlier run's, anything a user put there) is never a fresh one.
        """
        path = Path(os.path.abspath(path))
        files = _hydras_files(path, hydra_subdir)
        return None if files is None else cls(path, hydra_subdir, files)

    def remove(self, keep: Sequence[Path] = ()) -> bool:
        """Remove the directory if it still holds just the same files; returns whether it did.

        Nothing is removed when the directory is or holds one of ``keep`` (the working
        directory, the run being resumed), or when anything was written since :meth:`find`
        (a record, a checkpoint, a log line). Then the parents this leaves empty are removed
        too, up to the nearest of ``keep`` that holds them (Hydra's ``outputs/<date>/<time>``
        under the working directory).
        """
        kept = [Path(os.path.abspath(k)) for k in keep]
        if any(k == self.path or self.path in k.parents for k in kept):
            return False
        if _hydras_files(self.path, self.hydra_subdir) != self.files:
            return False
        root = logging.getLogger()
        for handler in list(root.handlers):  # the job's log files, about to be removed
            if (
                isinstance(handler, logging.FileHandler)
                and Path(handler.baseFilename) in self.files
            ):
                root.removeHandler(handler)
                handler.close()
        try:
            for file in self.files:
                file.unlink()
            if self.hydra_subdir and (self.path / self.hydra_subdir).is_dir():
                (self.path / self.hydra_subdir).rmdir()
            self.path.rmdir()  # fails, and keeps it, if anything appeared meanwhile
        except OSError:
            return False
        # The parents left empty, up to the nearest of `keep` that holds the directory.
        tops = [k for k in kept if k in self.path.parents]
        if tops:
            top = max(tops, key=lambda k: len(k.parts))
            parent = self.path.parent
            while parent != top:
                try:
                    parent.rmdir()
                except OSError:  # not empty: someone else's too
                    break
                parent = parent.parent
        return True


def _log_files() -> set[Path]:
    """The files the root logger's handlers write to (Hydra's job log)."""
    return {
        Path(handler.baseFilename)
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.FileHandler)
    }


def _hydras_files(path: Path, hydra_subdir: str | None) -> frozenset[Path] | None:
    """The files of ``path`` if they are Hydra's saved configuration and empty job logs."""
    logs = _log_files()
    subdir = path / hydra_subdir if hydra_subdir else None
    files = set()
    try:
        for entry in path.iterdir():
            if entry == subdir and entry.is_dir() and not entry.is_symlink():
                for inner in entry.iterdir():
                    if inner.name not in HYDRA_FILES or inner.is_symlink() or not inner.is_file():
                        return None
                    files.add(inner)
            elif entry in logs and not entry.is_symlink() and entry.is_file():
                if entry.stat().st_size > 0:
                    return None
                files.add(entry)
            else:
                return None
    except OSError:
        return None
    return frozenset(files)
