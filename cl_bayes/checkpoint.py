"""Checkpoints after every task: everything needed to continue from the next task.

A checkpoint holds tensors and plain containers only (dicts, lists, strings, numbers), so
:func:`load` reads it with ``torch.load(..., weights_only=True)``: a file from elsewhere cannot
run code when it is loaded, as an unrestricted pickle can. Checkpoints written before the
random number generators' states were kept as tensors and lists hold numpy arrays and
``TorchVersion`` strings; :data:`OLD_FORMAT_TYPES` lets exactly those through, so they load
the same way.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import random
import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cl_bayes.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"


def _old_format_types() -> list[Any]:
    """What older checkpoints pickled besides tensors: numpy arrays, scalars, TorchVersion.

    Each is data, not code: ``_reconstruct`` and ``scalar`` rebuild an array or a number from
    its dtype and bytes (an object array's items go through the same restricted unpickler).
    numpy 2 moved ``numpy.core`` to ``numpy._core``; files pickled under numpy 1 name the old
    module, so both names are allowed.
    """
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct, scalar
    from torch.torch_version import TorchVersion

    types = [np.ndarray, np.dtype, TorchVersion, _reconstruct, scalar]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        types += [(_reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    # numpy >= 1.25 pickles a dtype through its class (numpy.dtypes.Float64DType, ...).
    types += [type(np.dtype(code)) for code in np.typecodes["All"]]
    return types


OLD_FORMAT_TYPES = _old_format_types()


def rng_state() -> dict[str, Any]:
    """The state of every random number generator a run draws from, as tensors and lists."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            # uint32 words, held exactly by int64.
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from what :func:`rng_state` returned (or older checkpoints held).

    Older checkpoints hold numpy's and Python's states as the tuples ``np.random.get_state()``
    and ``random.getstate()`` return; those are restored as they are.
    """
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    np.random.set_state(numpy_state)
    python_state = state["python"]
    if isinstance(python_state, dict):
        python_state = (
            python_state["version"],
            tuple(python_state["internal"]),
            python_state["gauss_next"],
        )
    random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` atomically (temporary file, then rename).

    Numbers and strings of numpy's or torch's own types (``np.float64``, ``TorchVersion``)
    are stored as Python's. Anything else :func:`load` would refuse (a numpy array, an
    object of a class of its own) is a ``TypeError`` here, at the first checkpoint, rather
    than at resume.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(_plain(state), tmp)
        refused = _refused_globals(tmp)
        if refused:
            raise TypeError(
                f"checkpoint state holds {', '.join(refused)}, which torch.load(weights_only="
                "True) refuses: keep tensors, dicts, lists, strings and numbers in a state_dict."
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` (tensors land on the CPU), running no code.

    Raises :class:`UserError` in one line when the file holds anything but tensors and plain
    data (it would run code when unpickled) or cannot be read (truncated, corrupt, not a
    checkpoint).
    """
    try:
        with _allowing(OLD_FORMAT_TYPES):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused is None:  # e.g. "invalid load key": not a pickle at all
            raise UserError(_unreadable(path, error)) from None
        raise UserError(
            f"refusing to load {path}: it holds {refused.group(1)}, which is not plain data "
            "(loading it could run code). A checkpoint that python -m cl_bayes wrote holds "
            "tensors, dicts, lists, strings and numbers only."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise UserError(_unreadable(path, error)) from None


def to_device(state: Any, device: torch.device | str) -> Any:
    """``state`` with every tensor in it moved to ``device`` (dicts, lists and tuples rebuilt).

    :func:`load` puts tensors on the CPU; a method's state goes back to the run's device before
    it is restored, so that what it adds to the model's parameters lives beside them.
    """
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):  # a copy keeps the kind of dict (ordered, counting, default)
        moved = copy.copy(state)
        for key, value in state.items():
            moved[key] = to_device(value, device)
        return moved
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # a named tuple
        return type(state)(*(to_device(value, device) for value in state))
    if isinstance(state, list | tuple):
        return type(state)(to_device(value, device) for value in state)
    return state


def _unreadable(path: Path, error: Exception) -> str:
    """One line for a file torch cannot read, with the gist of torch's (long) message."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(boilerplate)]
    # torch's messages go on with advice for torch's users, after the first sentence.
    reason = lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__
    return (
        f"{path} is not a checkpoint that python -m cl_bayes wrote, or it is truncated or "
        f"corrupt ({reason})."
    )


@contextlib.contextmanager
def _allowing(types: list[Any]) -> Iterator[None]:
    """``torch.serialization.safe_globals(types)``, where this torch has it (2.5 and later)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        yield
        return
    with safe_globals(types):
        yield


def _refused_globals(path: Path) -> list[str]:
    """The globals in the checkpoint at ``path`` that ``weights_only=True`` would refuse."""
    find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    return sorted(find(path)) if find is not None else []


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and str subclasses as ``str``."""
    if isinstance(value, dict):
        plain = {key: _plain(item) for key, item in value.items()}
        if isinstance(value, OrderedDict):  # a state_dict, with its modules' versions
            plain = OrderedDict(plain)
            if hasattr(value, "_metadata"):
                plain._metadata = value._metadata
        return plain
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and type(value) is not str:
        return str(value)
    return value
