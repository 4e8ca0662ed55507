"""The episodic memory of the replay methods (ER, A-GEM, DER): examples held as indices.

An entry is a pair (task id, example index) into ``seen[task].x``, the training sets the loop
hands to ``Method.training_data``; the memory never copies an input. A memory batch is
rebuilt from ``seen`` when it is drawn: each example with its own task's scenario target and
its own head (a per-example head tensor where the tasks' heads differ, as in the task
scenario), so replayed examples are answered by the heads they were trained with.

The memory is filled in one of three ways:

- :meth:`EpisodicMemory.add` with ``policy="reservoir"``: reservoir sampling over the stream
  of training examples (Vitter's algorithm R): the ``i``-th example offered overall is kept
  with probability ``capacity / i``, at a uniformly random slot, so at any time the memory is
  a uniform sample of everything offered so far. Vectorised over a batch with exactly the
  outcome of offering its examples one by one (a slot chosen twice keeps the later example).
- :meth:`EpisodicMemory.add` with ``policy="class_balanced"``: the capacity is split into
  equal quotas ``capacity // C`` over the ``C`` classes seen so far (in the scenario's label
  space: the target, and in the task scenario the pair (head, target)); when a batch brings new
  classes, the classes above the smaller quota lose uniformly random entries down to it (the
  largest classes give up their slots), and within its quota each class is a reservoir over
  its own examples. A batch's new classes are registered before its examples are offered.
  (Like the class-balancing reservoir of Chrysakis & Moens, "Online Continual Learning from
  Imbalanced Data", ICML 2020, with fixed equal quotas.)
- :meth:`EpisodicMemory.extend`: entries appended as given, no bound (A-GEM's memory of a
  fixed number of examples per task).

Entries may carry a row of stored logits (DER), with the number of outputs that were active
when they were stored. Every random draw uses torch's global generator (on the data's
device), so a checkpoint's RNG state covers it; :meth:`~EpisodicMemory.state_dict` holds
tensors and ints only.

Every minibatch the loop draws carries its examples' positions in their task's training set
(``LabelledData.index``), which is what ``train_step`` offers to the memory.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError

POLICIES = ("reservoir", "class_balanced")


def check_positive(key: str, value: Any) -> None:
    """Raise a one-line :class:`ConfigError` unless ``method.<key>`` is a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"method.{key} must be a positive whole number, got {value!r}.")


def class_keys(data: LabelledData) -> Tensor:
    """Each example's class in the scenario's label space, ``(n,)`` long.

    The target, made distinct per head (``head * n_outputs + target``): in the task scenario
    the same target on two heads is two classes; with one head the key is the target itself.
    """
    return data.y + data.head * data.n_outputs


class EpisodicMemory:
    """A memory of training examples held as (task id, example index) pairs.

    Parameters
    ----------
    capacity
        Most entries held in total (``add``); ``None`` for no bound (``extend`` only).
    policy
        ``reservoir`` or ``class_balanced``: how :meth:`add` chooses what to keep.

    Attributes
    ----------
    task, index
        ``(size,)`` long: entry ``k`` is example ``index[k]`` of task ``task[k]``.
    key
        ``(size,)`` long: each entry's class (:func:`class_keys`).
    logits
        ``(size, outputs)``: logits stored with each entry (zero-padded on the right).
    n_logits
        ``(size,)`` long: how many of each row's logits were stored (0: none).
    n_seen
        Examples offered to :meth:`add` so far (the stream's length).
    classes, class_seen
        ``(C,)`` long: the class keys met so far, in order of arrival, and how many examples
        of each were offered.
    """

    def __init__(self, capacity: int | None = None, policy: str = "reservoir"):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.capacity, self.policy = capacity, policy
        self.task = torch.zeros(0, dtype=torch.long)
        self.index = torch.zeros(0, dtype=torch.long)
        self.key = torch.zeros(0, dtype=torch.long)
        self.logits = torch.zeros(0, 0)
        self.n_logits = torch.zeros(0, dtype=torch.long)
        self.n_seen = 0
        self.classes = torch.zeros(0, dtype=torch.long)
        self.class_seen = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.task)

    # -- filling -----------------------------------------------------------------------------
    def add(
        self,
        task_id: int,
        index: Tensor,
        data: LabelledData,
        logits: Tensor | None = None,
    ) -> None:
        """Offer examples ``index`` ``(b,)`` of task ``task_id``, in stream order.

        ``data`` holds those ``b`` examples (their targets and heads); ``logits``
        ``(b, outputs)``, when given, is stored with each example that is kept.
        """
        if self.capacity is None:
            raise ValueError("add needs a memory with a capacity; use extend")
        self.to(index.device)
        keys = class_keys(data)
        if self.policy == "reservoir":
            slot, append = self._reservoir_slots(len(index))
        else:
            slot, append = self._class_balanced_slots(keys)
        if append.numel():
            self._append(task_id, index[append], keys[append], _rows(logits, append))
        if slot is not None:
            self._write(slot, task_id, index, keys, logits)
        self.n_seen += len(index)

    def extend(self, task_id: int, index: Tensor, data: LabelledData) -> None:
        """Append examples ``index`` ``(b,)`` of task ``task_id`` (``data``: those examples)."""
        self.to(index.device)
        self._append(task_id, index, class_keys(data), None)

    def _reservoir_slots(self, b: int) -> tuple[Tensor | None, Tensor]:
        """Algorithm R for ``b`` examples: (slot per example or -1, batch rows to append)."""
        device = self.task.device
        n_fill = max(0, min(b, self.capacity - self.n_seen))  # the memory's free slots
        append = torch.arange(n_fill, device=device)
        if n_fill == b:
            return None, append
        count = self.n_seen + torch.arange(1, b + 1, device=device)  # 1-based stream position
        draw = _uniform_below(count)
        slot = torch.where((count > self.capacity) & (draw < self.capacity), draw, -1)
        return slot, append

    def _class_balanced_slots(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Per-class reservoirs of equal quota: (slot per example or -1, batch rows to append)."""
        known = (keys[:, None] == self.classes[None, :]).any(dim=1)
        if not bool(known.all()):
            self.classes = torch.cat([self.classes, keys[~known].unique()])
            new = self.class_seen.new_zeros(len(self.classes) - len(self.class_seen))
            self.class_seen = torch.cat([self.class_seen, new])
            self._evict_above(self.capacity // len(self.classes))
        quota = self.capacity // len(self.classes)
        n_classes = len(self.classes)
        cls = _position(keys, self.classes)
        onehot = F.one_hot(cls, n_classes)
        rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1) - 1  # 0-based, within the batch
        count = self.class_seen[cls] + rank + 1  # 1-based position in the class's stream
        self.class_seen = self.class_seen + onehot.sum(dim=0)
        fill = count <= quota
        draw = _uniform_below(count)
        replace = ~fill & (draw < quota)
        # A replacing example comes after its class's appends (count > quota): its slot is the
        # draw-th entry of its class, the batch's appends included.
        mem_cls = _position(self.key, self.classes)
        appended = fill.nonzero().squeeze(1)
        mem_cls = torch.cat([mem_cls, cls[appended]])
        order = torch.argsort(mem_cls, stable=True)
        start = torch.bincount(mem_cls, minlength=n_classes).cumsum(0)
        start = start - torch.bincount(mem_cls, minlength=n_classes)
        at = (start[cls] + draw).clamp(max=max(len(order) - 1, 0))
        slot = torch.where(replace, order[at] if len(order) else at, -1)
        return slot, appended

    def _evict_above(self, quota: int) -> None:
        """Drop uniformly random entries of every class holding more than ``quota``."""
        if not len(self):
            return
        cls = _position(self.key, self.classes)
        order = torch.randperm(len(self), device=cls.device)
        order = order[torch.argsort(cls[order], stable=True)]  # by class, random within
        counts = torch.bincount(cls, minlength=len(self.classes))
        start = counts.cumsum(0) - counts
        rank = torch.arange(len(self), device=cls.device) - start[cls[order]]
        self._select(order[rank < quota].sort().values)

    # -- storage -----------------------------------------------------------------------------
    def _append(self, task_id: int, index: Tensor, keys: Tensor, logits: Tensor | None) -> None:
        n = len(index)
        self.task = torch.cat([self.task, torch.full_like(index, task_id)])
        self.index = torch.cat([self.index, index])
        self.key = torch.cat([self.key, keys])
        self._widen(0 if logits is None else logits.shape[1])
        rows = self.logits.new_zeros(n, self.logits.shape[1])
        n_logits = self.n_logits.new_zeros(n)
        if logits is not None:
            rows[:, : logits.shape[1]] = logits
            n_logits += logits.shape[1]
        self.logits = torch.cat([self.logits, rows])
        self.n_logits = torch.cat([self.n_logits, n_logits])

    def _write(
        self, slot: Tensor, task_id: int, index: Tensor, keys: Tensor, logits: Tensor | None
    ) -> None:
        """Put example ``i`` at ``slot[i]`` (``-1``: nowhere); of two at one slot, the later."""
        kept = (slot >= 0).nonzero().squeeze(1)
        if not len(kept):
            return
        target, inverse = slot[kept].unique(return_inverse=True)
        source = torch.full_like(target, -1).scatter_reduce_(0, inverse, kept, reduce="amax")
        self.task[target] = task_id
        self.index[target] = index[source]
        self.key[target] = keys[source]
        if logits is not None:
            self._widen(logits.shape[1])
            self.logits[target] = F.pad(logits[source], (0, self.logits.shape[1] - logits.shape[1]))
            self.n_logits[target] = logits.shape[1]

    def _widen(self, outputs: int) -> None:
        if outputs > self.logits.shape[1]:
            self.logits = F.pad(self.logits, (0, outputs - self.logits.shape[1]))

    def _select(self, keep: Tensor) -> None:
        self.task, self.index, self.key = self.task[keep], self.index[keep], self.key[keep]
        self.logits, self.n_logits = self.logits[keep], self.n_logits[keep]

    def to(self, device: torch.device) -> None:
        """Keep the entries on ``device`` (the data's; a checkpoint loads them on the CPU)."""
        if self.task.device != device:
            for name in ("task", "index", "key", "logits", "n_logits", "classes", "class_seen"):
                setattr(self, name, getattr(self, name).to(device))

    # -- replay ------------------------------------------------------------------------------
    def sample(self, k: int) -> Tensor:
        """``min(k, size)`` distinct entry positions ``(k,)``, drawn uniformly at random.

        They come grouped by task (the order within a batch changes no loss), so that
        :meth:`batch` gathers each task's examples in one piece.
        """
        positions = torch.randperm(len(self), device=self.task.device)[:k]
        return positions[torch.argsort(self.task[positions], stable=True)]

    def distinct(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """The distinct entries among ``positions`` and where each position stands among them.

        Returns ``(entries, where)``: ``entries`` ``(d,)`` grouped by task, as :meth:`sample`
        gives them, and ``where`` ``(len(positions),)`` with ``entries[where] == positions``.
        """
        entries, inverse = positions.unique(return_inverse=True)
        order = torch.argsort(self.task[entries], stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=order.device)
        return entries[order], rank[inverse]

    def batch(
        self,
        positions: Tensor,
        seen: Sequence[LabelledData],
        n_outputs: int,
        first: LabelledData | None = None,
    ) -> LabelledData:
        """The entries at ``positions`` as training data, rebuilt from ``seen``, in that order.

        Inputs, scenario targets and heads come from each entry's own task (``seen[task]``):
        one head index where all of them share it, else a per-example ``(k,)`` head tensor.
        ``n_outputs`` is the outputs active now (class scenario: every class seen so far).
        ``first`` (the current batch, with inputs) is put before the entries, so that the
        joined batch is built in one go.
        """
        self.to(seen[0].y.device)
        task, index = self.task[positions], self.index[positions]
        # Runs of entries of one task (one per task for positions from sample) are
        # gathered straight into place.
        runs, lengths = (v.tolist() for v in torch.unique_consecutive(task, return_counts=True))
        heads = [seen[t].head for t in set(runs)] + ([] if first is None else [first.head])
        shared = all(isinstance(h, int) for h in heads) and len(set(heads)) <= 1
        offset = 0 if first is None else len(first)
        n = offset + len(positions)
        x = seen[0].x.new_empty((n, *seen[0].x.shape[1:]))
        y = seen[0].y.new_empty(n)
        head: int | Tensor = (heads[0] if heads else 0) if shared else y.new_empty(n)
        if first is not None:
            x[:offset], y[:offset] = first.x, first.y
            if not shared:
                head[:offset] = first.head
        start = offset
        for t, rows in zip(runs, index.split(lengths), strict=True):
            end = start + len(rows)
            torch.index_select(seen[t].x, 0, rows, out=x[start:end])
            torch.index_select(seen[t].y, 0, rows, out=y[start:end])
            if not shared:
                h = seen[t].head
                head[start:end] = h if isinstance(h, int) else h[rows]
            start = end
        return LabelledData(x, y, head, n_outputs)

    def stored_logits(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Logits stored with the entries at ``positions``: ``(k, outputs)`` and ``(k,)`` counts."""
        return self.logits[positions], self.n_logits[positions]

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The entries, stored logits and counters, as tensors and ints."""
        return {
            "task": self.task.clone(),
            "index": self.index.clone(),
            "key": self.key.clone(),
            "logits": self.logits.clone(),
            "n_logits": self.n_logits.clone(),
            "n_seen": self.n_seen,
            "classes": self.classes.clone(),
            "class_seen": self.class_seen.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (moved to the data's device on first use)."""
        for name in ("task", "index", "key", "logits", "n_logits", "classes", "class_seen"):
            setattr(self, name, state[name].clone())
        self.n_seen = int(state["n_seen"])


def _uniform_below(count: Tensor) -> Tensor:
    """One uniform draw from ``0 .. count[i] - 1`` per entry of ``count`` ``(b,)`` long."""
    u = torch.rand(count.shape, dtype=torch.float64, device=count.device)
    return torch.minimum((u * count).long(), count - 1)


def _position(keys: Tensor, classes: Tensor) -> Tensor:
    """Where each of ``keys`` stands in ``classes`` (every key must be there)."""
    return (keys[:, None] == classes[None, :]).long().argmax(dim=1)


def _rows(logits: Tensor | None, rows: Tensor) -> Tensor | None:
    return None if logits is None else logits[rows]
