"""The episodic memory of the replay methods: index storage, reservoir, class balance, batches."""

from __future__ import annotations

import io

import pytest
import torch

from cl_bayes.data import LabelledData
from cl_bayes.memory import EpisodicMemory, class_keys


def _stream(n, n_outputs=2, head=0, task_inputs=0.0):
    """``n`` examples whose single input is ``task_inputs + index`` and whose target alternates."""
    x = (task_inputs + torch.arange(n, dtype=torch.float32)).reshape(n, 1, 1, 1)
    return LabelledData(x, torch.arange(n) % n_outputs, head, n_outputs)


def _offer(memory, task_id, data, batch_size):
    for index in torch.arange(len(data)).split(batch_size):
        memory.add(task_id, index, data.subset(index))


def _three_tasks_in_memory():
    """Three task-incremental tasks of 50, offered in batches of 10 to a reservoir of 30.

    Task t's head is t; inputs encode (task, index) as 1000 t + index.
    """
    torch.manual_seed(0)
    seen = [_stream(50, head=t, task_inputs=1000.0 * t) for t in range(3)]
    memory = EpisodicMemory(30, "reservoir")
    for t in range(3):
        _offer(memory, t, seen[t], 10)
    return seen, memory


def test_reservoir_memory_is_bounded_and_holds_distinct_seen_examples():
    torch.manual_seed(0)
    memory = EpisodicMemory(100, "reservoir")
    data = _stream(1000)
    for index in torch.arange(1000).split(37):
        memory.add(0, index, data.subset(index))
        assert len(memory) == min(100, int(index[-1]) + 1)
    assert memory.n_seen == 1000
    assert len(memory.index.unique()) == 100  # one pass: no example twice
    assert bool((memory.index < 1000).all()) and bool((memory.task == 0).all())


def _inclusion_counts(capacity, n, batch_size, repeats):
    torch.manual_seed(0)
    data = _stream(n)
    counts = torch.zeros(n)
    for _ in range(repeats):
        memory = EpisodicMemory(capacity, "reservoir")
        _offer(memory, 0, data, batch_size)
        counts += torch.bincount(memory.index, minlength=n)
    return counts


def _looks_uniform(counts, p, repeats):
    """Whether inclusion ``counts`` over ``repeats`` runs fit one inclusion probability ``p``."""
    n, expected = len(counts), repeats * p
    # Pearson's statistic over the n counts (each Binomial(repeats, p)): about chi-square
    # with n degrees of freedom, mean n and standard deviation sqrt(2n) (45 for n = 1000).
    statistic = ((counts - expected) ** 2 / (expected * (1 - p))).sum()
    blocks = counts.split(n // 5)  # and no part of the stream is favoured
    return statistic < n + 5 * (2 * n) ** 0.5 and all(
        abs(block.mean() / repeats - p) < 0.1 * p for block in blocks
    )


# (capacity, stream length, batch size): one pass in batches of 50, and one batch of 300
# examples that compete for the 100 slots (a slot drawn twice must keep the later example).
STREAMS = {"batches": (100, 1000, 50), "one_batch": (100, 300, 300)}


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_reservoir_keeps_every_streamed_example_with_equal_probability(stream):
    # Stream the examples through the memory many times: each must be kept in a fraction
    # capacity / n of the runs, early or late in the stream.
    capacity, n, batch_size = STREAMS[stream]
    counts = _inclusion_counts(capacity, n, batch_size, repeats=400)
    assert _looks_uniform(counts, capacity / n, repeats=400)


@pytest.mark.parametrize("mistake", ["always_replace", "double_acceptance", "first_writer_wins"])
def test_the_uniformity_check_fails_a_wrong_reservoir(monkeypatch, mistake):
    import cl_bayes.memory as memory_module

    real_draw, real_write = memory_module._uniform_below, EpisodicMemory._write

    def always_replace(count):  # acceptance probability 1 instead of capacity / i
        return real_draw(count) % 100

    def double_acceptance(count):  # 2 capacity / i
        return real_draw(count) // 2

    def first_writer_wins(self, slot, task_id, index, keys, logits):
        rows = torch.arange(len(slot))
        keep = slot >= 0
        first = torch.full((len(self),), len(slot)).scatter_reduce(
            0, slot[keep], rows[keep], reduce="amin"
        )
        slot = torch.where(keep & (first[slot.clamp(min=0)] == rows), slot, -1)
        real_write(self, slot, task_id, index, keys, logits)

    if mistake == "first_writer_wins":
        monkeypatch.setattr(EpisodicMemory, "_write", first_writer_wins)
        capacity, n, batch_size = STREAMS["one_batch"]
    else:
        wrong = always_replace if mistake == "always_replace" else double_acceptance
        monkeypatch.setattr(memory_module, "_uniform_below", wrong)
        capacity, n, batch_size = STREAMS["batches"]
    counts = _inclusion_counts(capacity, n, batch_size, repeats=400)
    assert not _looks_uniform(counts, capacity / n, repeats=400)


def test_class_balanced_memory_gives_every_class_seen_an_equal_share():
    torch.manual_seed(0)
    memory = EpisodicMemory(100, "class_balanced")
    # Class-incremental labels: task t brings classes 2t and 2t + 1 (imbalanced: 3:1).
    for t in range(3):
        y = 2 * t + (torch.arange(800) % 4 == 0).long()
        data = LabelledData(torch.zeros(800, 1, 1, 1), y, 0, 2 * t + 2)
        _offer(memory, t, data, 64)
        counts = torch.bincount(memory.key, minlength=2 * t + 2)
        quota = 100 // (2 * t + 2)
        assert counts.tolist() == [quota] * (2 * t + 2), counts
        for c in range(2 * t + 2):  # each class's entries are examples of that class
            assert bool((memory.task[memory.key == c] == c // 2).all())


def test_class_balanced_memory_samples_each_class_uniformly_over_its_stream():
    # Domain-incremental: the same two classes in two tasks. Each class keeps 50 slots, a
    # uniform sample of all its examples, so about half come from each task.
    from_first = []
    for seed in range(20):
        torch.manual_seed(seed)
        memory = EpisodicMemory(100, "class_balanced")
        for t in range(2):
            _offer(memory, t, _stream(400), 50)
        assert torch.bincount(memory.key).tolist() == [50, 50]
        from_first.append((memory.task == 0).float().mean().item())
    assert abs(sum(from_first) / len(from_first) - 0.5) < 0.05, from_first


def test_task_scenario_classes_are_per_head():
    data = LabelledData(
        torch.zeros(4, 1), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 3, 3]), 2
    )
    assert class_keys(data).tolist() == [0, 1, 6, 7]
    assert class_keys(LabelledData(data.x, data.y, 2, 2)).tolist() == [4, 5, 4, 5]


def test_a_memory_batch_answers_each_example_with_its_own_head_and_target():
    seen, memory = _three_tasks_in_memory()
    batch = memory.batch(memory.sample(30), seen, n_outputs=2)
    task, index = (
        batch.x.flatten().div(1000, rounding_mode="floor").long(),
        batch.x.flatten() % 1000,
    )
    assert isinstance(batch.head, torch.Tensor) and len(task.unique()) > 1
    assert torch.equal(batch.head, task)
    assert torch.equal(batch.y, index.long() % 2)
    assert batch.n_outputs == 2
    # Positions in any order (not grouped by task as sample gives them) keep their order.
    positions = torch.randperm(30)
    batch = memory.batch(positions, seen, n_outputs=2)
    task, index = (
        batch.x.flatten().div(1000, rounding_mode="floor").long(),
        batch.x.flatten() % 1000,
    )
    assert torch.equal(task, memory.task[positions]) and torch.equal(
        index.long(), memory.index[positions]
    )
    assert torch.equal(batch.head, task) and torch.equal(batch.y, index.long() % 2)
    # Class-incremental: one shared head, targets with each task's class offset.
    seen = [LabelledData(s.x, s.y + 2 * t, 0, 2 * t + 2) for t, s in enumerate(seen)]
    batch = memory.batch(memory.sample(30), seen, n_outputs=6)
    task = batch.x.flatten().div(1000, rounding_mode="floor").long()
    assert batch.head == 0 and batch.n_outputs == 6
    assert torch.equal(batch.y, (batch.x.flatten() % 1000).long() % 2 + 2 * task)


def test_distinct_gives_each_entry_once_grouped_by_task_and_where_each_position_is():
    seen, memory = _three_tasks_in_memory()
    positions = torch.cat([memory.sample(20), memory.sample(20)])  # two draws: shared entries
    entries, where = memory.distinct(positions)
    assert len(entries) < len(positions)  # 20 + 20 of 30 entries: some are in both
    assert sorted(entries.tolist()) == sorted(set(positions.tolist()))
    assert torch.equal(entries[where], positions)
    task = memory.task[entries]
    assert torch.equal(task, task.sort().values)  # one run per task, as sample gives them
    # A batch of the distinct entries answers each position with its own example.
    batch = memory.batch(entries, seen, n_outputs=2)
    torch.testing.assert_close(batch.x[where], memory.batch(positions, seen, n_outputs=2).x)


def test_a_memory_holds_indices_never_inputs():
    torch.manual_seed(0)
    seen = [_stream(20)]
    memory = EpisodicMemory(10, "reservoir")
    _offer(memory, 0, seen[0], 5)
    for value in memory.state_dict().values():
        assert isinstance(value, int) or value.dtype == torch.long or value.numel() == 0
    batch = memory.batch(torch.arange(10), seen, 2)
    assert torch.equal(batch.x, seen[0].x[memory.index])


def test_minibatches_carry_their_examples_positions():
    data = _stream(8)
    data = LabelledData(data.x, data.y, data.head, data.n_outputs, torch.arange(8))
    batch = data.subset(torch.tensor([4, 1])).subset(torch.tensor([1]))
    assert batch.index.tolist() == [1] and torch.equal(batch.x, data.x[[1]])
    assert LabelledData.concat([data, data]).index is None


def test_stored_logits_keep_their_width_and_are_padded():
    torch.manual_seed(0)
    memory = EpisodicMemory(10, "reservoir")
    data = _stream(4)
    memory.add(0, torch.arange(4), data, logits=torch.ones(4, 2))
    memory.add(1, torch.arange(4), data, logits=2 * torch.ones(4, 4))
    stored, n_stored = memory.stored_logits(torch.arange(8))
    assert stored.shape == (8, 4) and n_stored.tolist() == [2] * 4 + [4] * 4
    assert stored[:4].tolist() == [[1, 1, 0, 0]] * 4 and stored[4:].tolist() == [[2] * 4] * 4


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced"])
def test_a_state_dict_round_trip_continues_exactly(policy):
    data = _stream(300, n_outputs=3)
    torch.manual_seed(0)
    memory = EpisodicMemory(40, policy)
    _offer(memory, 0, data, 32)
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    restored = EpisodicMemory(40, policy)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for m in (memory, restored):
        torch.manual_seed(1)
        _offer(m, 1, data, 32)
    for key, value in memory.state_dict().items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored.state_dict()[key]))
