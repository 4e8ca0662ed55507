"""Checkpoints: plain data only, loaded without running code, restoring every generator exactly."""

from __future__ import annotations

import os
import random
from collections import Counter, OrderedDict, namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cl_bayes import checkpoint
from cl_bayes.errors import UserError
from cl_bayes.posterior_summary import main as posterior_summary
from cl_bayes.run import run
from tests.methods.runs import run_stopped_after_task_1


def _draws() -> list[float]:
    """A few numbers from every generator a run draws from.

    numpy's and Python's Gaussians are included: both keep a cached second draw in their state.
    """
    return [
        *torch.rand(3).tolist(),
        *np.random.rand(3).tolist(),
        float(np.random.randn()),
        random.random(),
        random.gauss(0, 1),
    ]


def _scramble() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    # Leave a cached Gaussian in numpy's and Python's states.
    np.random.randn()
    random.gauss(0, 1)


def test_a_checkpoint_round_trips_as_tensors_and_plain_data(tmp_path, seeded):
    model = torch.nn.Linear(3, 2)
    state = {
        "config": {"seed": 0, "model": {"hidden_sizes": [8]}, "resume": None},
        "record": {"versions": {"torch": torch.__version__}, "summary": {"acc": np.float64(0.5)}},
        "accuracy_matrix": [[0.5, float("nan")]],
        "model": model.state_dict(),
        "method": {"seen_heads": [0], "coreset_index": [torch.arange(4)]},
        "rng": checkpoint.rng_state(),
    }
    path = tmp_path / checkpoint.CHECKPOINT_NAME
    checkpoint.save(path, state)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_NAME]
    loaded = checkpoint.load(path)
    assert loaded["config"] == state["config"]
    # numpy's and torch's own str and number types are stored as Python's.
    assert type(loaded["record"]["versions"]["torch"]) is str
    assert type(loaded["record"]["summary"]["acc"]) is float
    assert loaded["record"]["summary"]["acc"] == 0.5
    assert loaded["model"].keys() == state["model"].keys()
    assert loaded["model"]._metadata == state["model"]._metadata  # module versions kept
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    assert torch.equal(loaded["method"]["coreset_index"][0], torch.arange(4))
    # Every generator's state is a tensor or plain data: numpy's words held exactly.
    assert torch.equal(
        loaded["rng"]["numpy"]["keys"], torch.from_numpy(np.random.get_state()[1].astype(np.int64))
    )


def test_a_methods_state_moves_to_the_runs_device_whole():
    # load() puts tensors on the CPU; a resumed run on a GPU moves the method's state there
    # (EWC's after_task, merging a loaded CPU Fisher with the new task's GPU one, failed).
    Pair = namedtuple("Pair", "tensor count")
    fisher = OrderedDict(w=torch.ones(2))
    state = {
        "fisher": [fisher],
        "pair": (torch.zeros(1), 3),
        "named": Pair(torch.zeros(1), 2),
        "counts": Counter(a=3),
        "seen_heads": [0],
        "scale": 0.5,
    }
    moved = checkpoint.to_device(state, "meta")
    assert moved["fisher"][0]["w"].device.type == "meta"
    assert moved["pair"][0].device.type == "meta" and moved["pair"][1] == 3
    assert type(moved["fisher"][0]) is OrderedDict and type(moved["pair"]) is tuple
    assert type(moved["named"]) is Pair and moved["named"].tensor.device.type == "meta"
    assert moved["named"].count == 2
    assert moved["counts"] == Counter(a=3) and type(moved["counts"]) is Counter
    assert moved["seen_heads"] == [0] and moved["scale"] == 0.5
    assert fisher["w"].device.type == "cpu"  # the loaded state itself is left as it was


def test_a_resumed_run_restores_its_methods_state_on_the_runs_device(
    tiny_cfg, tmp_path, cached_data, monkeypatch
):
    cfg = tiny_cfg("method=ewc", "task.n_tasks=2")
    run_stopped_after_task_1(cfg, tmp_path / "stopped", monkeypatch)
    moves = []
    real = checkpoint.to_device

    def to_device(state, device):  # its recursive calls come through here too
        moves.append((state, torch.device(device)))
        return real(state, device)

    monkeypatch.setattr(checkpoint, "to_device", to_device)
    resumed = tiny_cfg("method=ewc", "task.n_tasks=2", f"resume={tmp_path / 'stopped'}")
    record = run(resumed, tmp_path / "resumed")
    assert record["status"] == "completed"
    assert sorted(moves[0][0]) == ["anchors", "fisher", "seen_heads"]  # EWC's whole state
    assert {device for _, device in moves} == {torch.device("cpu")}


def test_restoring_the_generators_continues_bit_for_bit(tmp_path, seeded):
    checkpoint.save(tmp_path / "c.pt", {"rng": checkpoint.rng_state()})
    expected = _draws()
    _scramble()
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"])
    assert _draws() == expected


def test_a_checkpoint_written_the_old_way_still_loads_and_restores(tmp_path, seeded):
    # Before the generators' states were kept as tensors and lists: numpy's state tuple (with
    # an ndarray), Python's tuple, the record's TorchVersion and numpy numbers, pickled as is.
    old = {
        "record": {"versions": {"torch": torch.__version__}, "acc": np.float64(0.25)},
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }
    path = tmp_path / "old.pt"
    torch.save(old, path)
    expected = _draws()
    _scramble()
    loaded = checkpoint.load(path)
    assert loaded["record"]["acc"] == 0.25 and loaded["record"]["versions"]["torch"] == str(
        torch.__version__
    )
    checkpoint.set_rng_state(loaded["rng"])
    assert _draws() == expected


def test_an_old_checkpoint_pickled_under_numpy_1_loads(tmp_path, seeded):
    # numpy 1 named its array constructor numpy.core.multiarray._reconstruct (numpy 2:
    # numpy._core); the legacy format is one pickle stream, so the name can be written in.
    path = tmp_path / "old.pt"
    torch.save({"numpy": np.random.get_state()}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    if b"numpy._core.multiarray" in data:
        path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray\n_reconstruct" in path.read_bytes()
    keys = checkpoint.load(path)["numpy"][1]
    assert np.array_equal(keys, np.random.get_state()[1])


def _touch(marker):
    """A pickled object whose unpickling runs a shell command that creates ``marker``."""

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return Payload()


@dataclass
class Stranger:
    """An object of a class of its own: unpickling it would import and run this module's code."""

    value: int = 1


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_checkpoint_carrying_a_pickled_callable_is_refused_and_never_runs_it(
    tmp_path, zip_format
):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    state = {"model": {"w": torch.zeros(2)}, "rng": _touch(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"refusing to load {path}: it holds ")
    assert os.system.__module__ in message and "system" in message  # posix.system on Linux
    assert not marker.exists()


def test_an_object_of_a_class_of_its_own_is_refused(tmp_path):
    torch.save({"method": Stranger()}, tmp_path / "c.pt")
    with pytest.raises(UserError, match=r"it holds tests\.test_checkpoint\.Stranger, which is not"):
        checkpoint.load(tmp_path / "c.pt")


def test_resume_and_posterior_summary_refuse_such_a_checkpoint(tmp_path, tiny_cfg, caplog):
    marker = tmp_path / "ran"
    run_dir = tmp_path / "evil_run"
    run_dir.mkdir()
    torch.save({"config": {}, "rng": _touch(marker)}, run_dir / checkpoint.CHECKPOINT_NAME)
    with pytest.raises(UserError, match=f"refusing to load {run_dir / checkpoint.CHECKPOINT_NAME}"):
        run(tiny_cfg(f"resume={run_dir}"), tmp_path / "run")
    assert posterior_summary([str(run_dir)]) == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"error: refusing to load {run_dir / checkpoint.CHECKPOINT_NAME}: it holds "
        f"{os.system.__module__}.system, which is not plain data (loading it could run code). "
        "A checkpoint that python -m cl_bayes wrote holds tensors, dicts, lists, strings and "
        "numbers only."
    ]
    assert not marker.exists()


def test_a_truncated_or_foreign_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"model": {"w": torch.arange(10000.0)}, "rng": checkpoint.rng_state()})
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    for size in (0, 10, len(data) // 2, len(data) - 10):
        cut.write_bytes(data[:size])
        with pytest.raises(UserError) as info:
            checkpoint.load(cut)
        message = str(info.value)
        assert "\n" not in message and len(message) < 300, message
        assert message.startswith(f"{cut} is not a checkpoint that python -m cl_bayes wrote")
        assert "truncated or corrupt" in message
    (tmp_path / "record.json").write_text('{"status": "completed"}')
    with pytest.raises(UserError, match="record.json is not a checkpoint .* truncated or corrupt"):
        checkpoint.load(tmp_path / "record.json")


def test_saving_what_load_would_refuse_fails_at_once_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match=r"numpy\.ndarray.*weights_only=True"):
        checkpoint.save(tmp_path / "c.pt", {"method": {"buffer": np.zeros(3)}})
    assert list(tmp_path.iterdir()) == []
