"""W&B logging, read back from the offline run files that wandb writes.

A ``run-<id>.wandb`` file is the run's transaction log: every config, history, summary and
artifact record wandb would send to the server, as ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import wandb
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf
from wandb.errors import UsageError
from wandb.proto import wandb_internal_pb2

import cl_bayes.run
from cl_bayes.config import instantiate
from cl_bayes.errors import ConfigError
from cl_bayes.loggers.wandb import WandbLogger, sweep_group
from cl_bayes.methods.finetune import Finetune
from cl_bayes.methods.vcl import VCL
from cl_bayes.run import run
from tests.conftest import compose_config, inside_hydra

# Small runs; epochs=2 so that every task logs more than one epoch.
QUICK = ["task.train_size=200", "train.epochs=2", "model.hidden_sizes=[32]", "device=cpu"]
FINETUNE_RUN = ["method=finetune", "task.n_tasks=3", "logger.group=tests", "logger.tags=[tiny,ci]"]
VCL_RUN = ["method=vcl", "task.n_tasks=2", "method.train_samples=2", "method.predict_samples=5"]


# -- reading a run file back -------------------------------------------------------------------
def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The complete records of a ``run-<id>.wandb`` file, in order.

    wandb 0.31 reads these files in its Go core only (the Python ``DataStore`` is gone), so
    this follows the format it writes: a 7-byte header (``:W&B``, magic ``0xBEE1``, version
    0), then LevelDB's log format (github.com/google/leveldb, ``doc/log_format.md``) with
    zlib's CRC-32: 32 KiB blocks of chunks, each ``crc (uint32), length (uint16), kind
    (uint8)`` before its data; a record is one FULL chunk (1) or FIRST (2), MIDDLE (3)...,
    LAST (4); a block's last 6 bytes or fewer are padding. Stops before a record that is not
    all written yet.
    """
    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    block, pos, parts, records = 32768, 7, [], []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the trailer of a block
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        if kind == 0 or len(chunk) < length:  # zero padding, or a chunk still being written
            break
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"corrupt chunk at byte {pos}"
        parts.append(chunk)
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def _items(items) -> dict:
    """``{key: value}`` of history or summary items; nested keys joined by dots."""
    return {
        ".".join(item.nested_key) if item.nested_key else item.key: json.loads(item.value_json)
        for item in items
    }


class RunFile:
    """What one offline W&B run recorded."""

    def __init__(self, run_dir: Path, timeout: float = 30):
        (self.path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # exactly one
        self.folder = self.path.parent
        # `Run.finish()` returns once the exit record is handled; wandb's service writes out
        # and closes the file just after, so wait for the exit record to be on disk.
        deadline = time.monotonic() + timeout
        self.records = read_records(self.path)
        while not any(r.HasField("exit") for r in self.records):
            assert time.monotonic() < deadline, f"{self.path} has no exit record after {timeout} s"
            time.sleep(0.05)
            self.records = read_records(self.path)
        kinds = [r.WhichOneof("record_type") for r in self.records]
        (self.run,) = [r.run for r, kind in zip(self.records, kinds, strict=True) if kind == "run"]
        self.config = _items(self.run.config.update)
        self.history, self.summary, self.artifacts, self.exits = [], {}, [], []
        for record, kind in zip(self.records, kinds, strict=True):
            if kind == "config":
                self.config.update(_items(record.config.update))
            elif kind == "history":
                self.history.append(_items(record.history.item))
            elif kind == "summary":
                self.summary.update(_items(record.summary.update))
            elif kind == "artifact":
                self.artifacts.append(record.artifact)
            elif kind == "exit":
                self.exits.append(record.exit)

    def rows(self, key: str) -> list[dict]:
        """The history rows that hold ``key``."""
        return [row for row in self.history if key in row]


def test_the_reader_follows_records_across_blocks(tmp_path):
    # The files of the runs below fit in one 32 KiB block; this one spans several, with a
    # config record too long for one block.
    big = "x" * 50_000
    wandb_run = wandb.init(project="reader", dir=str(tmp_path), mode="offline", config={"big": big})
    for step in range(1500):
        wandb_run.log({"value": step / 7})
    wandb_run.finish()
    logged = RunFile(tmp_path)
    assert logged.path.stat().st_size > 3 * 32768
    assert logged.config["big"] == big
    assert [row["value"] for row in logged.rows("value")] == [step / 7 for step in range(1500)]


# -- the shared offline runs -------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def wandb_env(tmp_path_factory):
    """Keep wandb quiet, offline and inside this module's temporary folders."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as env:
        for name in [name for name in os.environ if name.startswith("WANDB_")]:
            env.delenv(name)
        env.setenv("WANDB_SILENT", "true")
        env.setenv("WANDB_DISABLE_GIT", "true")
        env.setenv("WANDB_DISABLE_CODE", "true")
        env.setenv("WANDB_CONSOLE", "off")
        env.setenv("WANDB__DISABLE_STATS", "true")
        for name in ("DATA", "CACHE", "CONFIG", "ARTIFACT"):
            env.setenv(f"WANDB_{name}_DIR", str(home / name.lower()))
        wandb.teardown()  # wandb reads its environment when it first sets up: from here on
        yield home
        wandb.teardown()  # stop the wandb service this module started


@pytest.fixture(scope="module")
def offline(tmp_path_factory, data_root):
    """A finetune and a VCL run with ``logger.mode=offline``, one after the other in this process.

    Returns ``{name: (record, run dir, fits)}``; ``fits`` lists, per task, the epoch losses
    ``fit`` returned, the number of training examples and (VCL) the KL when it returned.
    """
    base = tmp_path_factory.mktemp("offline")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        fits = []
        real_fit = cl_bayes.run.fit

        def recording_fit(model, data, loss, *args, **kwargs):
            history = real_fit(model, data, loss, *args, **kwargs)
            method = getattr(loss, "__self__", None)
            kl = model.kl(method.seen_heads).item() if isinstance(method, VCL) else None
            fits.append((history, len(data), kl))
            return history

        patch.setattr(cl_bayes.run, "fit", recording_fit)
        for name, overrides in [("finetune", FINETUNE_RUN), ("vcl", VCL_RUN)]:
            fits = []
            cfg = compose_config(
                *QUICK,
                "progress=false",
                f"results_dir={base / 'results'}",
                "logger=wandb",
                "logger.mode=offline",
                *overrides,
            )
            runs[name] = (run(cfg, base / name), base / name, fits)
    return runs


def _matrix(record) -> np.ndarray:
    return np.array(record["accuracy_matrix"], dtype=float)


# -- what an offline run records ---------------------------------------------------------------
def test_the_run_carries_the_record_id_config_group_and_tags(offline):
    record, run_dir, _ = offline["finetune"]
    logged = RunFile(run_dir)
    assert logged.folder.parent == run_dir / "wandb"  # dir=null: inside the run directory
    assert logged.run.run_id == record["run_id"] == logged.run.display_name
    assert logged.run.project == "cl_bayes" and logged.run.job_type == "finetune"
    assert logged.run.run_group == "tests" and list(logged.run.tags) == ["tiny", "ci"]
    config = {key: value for key, value in logged.config.items() if key != "_wandb"}
    assert config == record["config"]  # the resolved config, as the record holds it
    assert config["train"]["epochs"] == 2 and config["logger"]["mode"] == "offline"


def test_every_epoch_loss_is_logged_against_the_run_wide_epoch(offline):
    record, run_dir, fits = offline["finetune"]
    logged = RunFile(run_dir)
    expected = [
        (t, 2 * t + epoch, loss)
        for t, (losses, _, _) in enumerate(fits)
        for epoch, loss in enumerate(losses)
    ]
    assert len(expected) == 3 * 2
    rows = logged.rows("train/loss")
    assert [(row["task"], row["epoch"], row["train/loss"]) for row in rows] == expected
    assert not logged.rows("train/kl")  # only Bayesian methods have a KL term


def test_after_every_task_its_accuracies_are_logged_at_the_task_index(offline):
    record, run_dir, _ = offline["finetune"]
    logged = RunFile(run_dir)
    R = _matrix(record)
    rows = logged.rows("eval/average_accuracy")
    assert [row["task"] for row in rows] == [0, 1, 2]
    for t, row in enumerate(rows):
        accuracies = {key: value for key, value in row.items() if key.startswith("eval/acc_task_")}
        assert accuracies == {f"eval/acc_task_{j}": R[t, j] for j in range(t + 1)}
        mean = record["summary"]["average_accuracy"][t]
        assert row["eval/average_accuracy"] == pytest.approx(mean)


@pytest.mark.parametrize("name", ["finetune", "vcl"])
def test_after_every_task_its_calibration_and_detection_are_logged(offline, name):
    record, run_dir, _ = offline[name]
    logged = RunFile(run_dir)
    rows = logged.rows("eval/ece")
    T = record["n_tasks"]
    assert [row["task"] for row in rows] == list(range(T))
    for t, row in enumerate(rows):
        for measure in ("nll", "brier", "ece", "entropy"):
            seen = np.array(record["uncertainty"][measure], dtype=float)[t, : t + 1]
            assert row[f"eval/{measure}"] == pytest.approx(seen.mean())
        # Only a sampling method has an epistemic part.
        assert ("eval/mutual_information" in row) == (name == "vcl")
        if t < T - 1:
            assert row["eval/unseen_auroc"] == pytest.approx(record["unseen_auroc"]["entropy"][t])
        else:
            assert "eval/unseen_auroc" not in row  # no task after the last
        assert row["eval/reliability._type"] == "image-file"
    files = logged.folder / "files"
    table = json.loads((files / logged.summary["ece_matrix.path"]).read_text())
    on_disk = json.loads((run_dir / "record.json").read_text())
    assert table["data"] == [[i] + row for i, row in enumerate(on_disk["uncertainty"]["ece"])]
    assert ("mutual_information_matrix._type" in logged.summary) == (name == "vcl")
    assert logged.summary["ece"] == pytest.approx(record["summary"]["ece"])


def test_the_summary_holds_the_records_final_metrics(offline):
    record, run_dir, _ = offline["finetune"]
    logged = RunFile(run_dir)
    summary = record["summary"]
    assert logged.summary["acc"] == summary["acc"]
    assert logged.summary["bwt"] == summary["bwt"]
    assert logged.summary["forgetting"] == summary["forgetting"]
    assert summary["fwt"] is None and "fwt" not in logged.summary  # undefined: not logged
    assert logged.summary["status"] == "completed" and logged.summary["tasks_completed"] == 3
    assert [e.exit_code for e in logged.exits] == [0]


def test_the_accuracy_matrix_is_logged_as_a_table_and_a_heatmap(offline):
    record, run_dir, _ = offline["finetune"]
    logged = RunFile(run_dir)
    files = logged.folder / "files"
    assert logged.summary["accuracy_matrix._type"] == "table-file"
    table = json.loads((files / logged.summary["accuracy_matrix.path"]).read_text())
    assert table["columns"] == ["after_task", "task_0", "task_1", "task_2"]
    on_disk = json.loads((run_dir / "record.json").read_text())  # unmeasured entries: null
    assert table["data"] == [[i] + row for i, row in enumerate(on_disk["accuracy_matrix"])]
    assert logged.summary["accuracy_heatmap._type"] == "image-file"
    png = files / logged.summary["accuracy_heatmap.path"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert logged.summary["accuracy_heatmap.width"] > 100


def test_the_run_record_is_an_artifact(offline):
    record, run_dir, _ = offline["finetune"]
    logged = RunFile(run_dir)
    (artifact,) = [a for a in logged.artifacts if a.type == "run-record"]
    assert artifact.name == record["run_id"]
    (entry,) = artifact.manifest.contents
    on_disk = (run_dir / "record.json").read_bytes()
    assert entry.path == "record.json" and entry.size == len(on_disk)
    assert entry.digest == base64.b64encode(hashlib.md5(on_disk).digest()).decode()
    assert json.loads(Path(entry.local_path).read_text()) == json.loads(on_disk)
    assert Path(entry.local_path).is_relative_to(run_dir)


def test_vcl_logs_its_kl_term_every_epoch(offline):
    record, run_dir, fits = offline["vcl"]
    logged = RunFile(run_dir)
    rows = logged.rows("train/loss")
    assert len(rows) == 2 * 2 and all("train/kl" in row for row in rows)
    assert [row["train/loss"] for row in rows] == [loss for f in fits for loss in f[0]]
    for t, (_, n_train, kl_at_end) in enumerate(fits):
        in_task = [row for row in rows if row["task"] == t]
        for row in in_task:
            # beta = 1: the KL part of the negative ELBO is KL / N_t, below the whole loss.
            assert row["train/kl"] > 0
            assert row["train/kl_term"] == pytest.approx(row["train/kl"] / n_train)
            assert row["train/kl_term"] < row["train/loss"]
        assert in_task[-1]["train/kl"] == pytest.approx(kl_at_end, rel=1e-6)
    assert logged.summary["acc"] == record["summary"]["acc"]
    assert logged.run.run_group == ""  # a single run outside a multirun is not grouped


def test_two_runs_in_one_process_stay_two_runs(offline):
    (a, a_dir, _), (b, b_dir, _) = offline["finetune"], offline["vcl"]
    first, second = RunFile(a_dir), RunFile(b_dir)
    assert first.run.run_id == a["run_id"] != second.run.run_id == b["run_id"]
    assert first.folder != second.folder
    # Nothing of one run leaked into the other.
    assert len(first.rows("train/loss")) == 6 and len(second.rows("train/loss")) == 4
    assert [len(f.rows("eval/average_accuracy")) for f in (first, second)] == [3, 2]


# -- where the run goes: WANDB_* variables, explicit settings, the offline fallback ------------
@pytest.fixture
def wandb_environ(monkeypatch):
    """``wandb_environ(NAME=value, ...)``: set ``WANDB_*`` variables as if before the run.

    wandb reads its environment once per process, when it sets up (a later change only gets a
    printed warning), so this stops wandb to make the next start read them; and again after
    the test, so that later tests see the module's environment.
    """

    def set_environ(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        wandb.teardown()

    yield set_environ
    wandb.teardown()


@pytest.fixture
def init_modes(monkeypatch) -> list:
    """The ``mode`` that each call of ``wandb.init`` was given, in order (the calls go on)."""
    modes, real_init = [], wandb.init

    def init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    return modes


@pytest.fixture
def unreachable_server():
    """The URL of a local port that refuses connections: a W&B server that cannot be reached."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


TWO_TASKS = ["method=finetune", "task.n_tasks=2", "train.epochs=2"]


def _run_completely_logged(record, run_dir: Path) -> RunFile:
    """The offline run of ``record``, checked to hold every epoch, task and the summary."""
    logged = RunFile(run_dir)
    assert record["status"] == "completed" and logged.run.run_id == record["run_id"]
    assert [row["epoch"] for row in logged.rows("train/loss")] == [0, 1, 2, 3]
    assert [row["task"] for row in logged.rows("eval/average_accuracy")] == [0, 1]
    assert logged.summary["acc"] == record["summary"]["acc"]
    assert [e.exit_code for e in logged.exits] == [0]
    return logged


def test_wandb_mode_offline_in_the_environment_writes_an_offline_run(
    wandb_environ, init_modes, tiny_cfg, tmp_path, cached_data, caplog
):
    wandb_environ(WANDB_MODE="offline")
    cfg = tiny_cfg("logger=wandb", *TWO_TASKS)
    assert cfg.logger.mode is None
    record = run(cfg, tmp_path / "run")

    assert init_modes == [None]  # WANDB_MODE decided, not the config
    logged = _run_completely_logged(record, tmp_path / "run")
    assert logged.folder.name.startswith("offline-run-")
    assert logged.run.project == "cl_bayes"  # no WANDB_PROJECT: cl_bayes, not "uncategorized"
    assert not list((tmp_path / "run" / "wandb").glob("run-*"))  # nothing tried online
    assert not _warnings(caplog)


def test_wandb_mode_disabled_in_the_environment_leaves_wandb_alone(
    wandb_environ, init_modes, tiny_cfg, tmp_path, cached_data, caplog
):
    wandb_environ(WANDB_MODE="disabled")
    record = run(tiny_cfg("logger=wandb", *TWO_TASKS), tmp_path / "run")
    assert record["status"] == "completed" and not _warnings(caplog)
    assert init_modes == [] and not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize(
    ("overrides", "project", "entity"),
    [([], "from_env", "team_env"), (["logger.project=mine", "logger.entity=me"], "mine", "me")],
)
def test_wandb_project_and_entity_decide_unless_the_config_sets_them(
    overrides, project, entity, wandb_environ, tiny_cfg, tmp_path, cached_data
):
    wandb_environ(WANDB_MODE="offline", WANDB_PROJECT="from_env", WANDB_ENTITY="team_env")
    record = run(tiny_cfg("logger=wandb", *TWO_TASKS, *overrides), tmp_path / "run")
    logged = _run_completely_logged(record, tmp_path / "run")
    assert (logged.run.project, logged.run.entity) == (project, entity)


@pytest.mark.parametrize(
    ("environment", "mode"), [("disabled", "offline"), ("offline", "disabled")]
)
def test_an_explicit_logger_mode_wins_over_wandb_mode(
    environment, mode, wandb_environ, init_modes, tiny_cfg, tmp_path, cached_data, caplog
):
    wandb_environ(WANDB_MODE=environment)
    record = run(tiny_cfg("logger=wandb", f"logger.mode={mode}", *TWO_TASKS), tmp_path / "run")
    assert record["status"] == "completed" and not _warnings(caplog)
    if mode == "offline":
        assert init_modes == ["offline"]
        _run_completely_logged(record, tmp_path / "run")
    else:
        assert init_modes == [] and not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize("cause", ["no API key", "no network"])
def test_an_online_start_that_cannot_reach_wandb_goes_on_offline(
    cause,
    wandb_environ,
    init_modes,
    unreachable_server,
    tiny_cfg,
    tmp_path,
    cached_data,
    caplog,
):
    # Real failures of wandb, quick and local: no key at all; or a key and a server that
    # refuses the connection (the case that needs wandb's service restarted before going
    # offline). WANDB_SILENT keeps wandb from prompting for a key.
    (tmp_path / "netrc").touch()
    environ = {"WANDB_BASE_URL": unreachable_server, "NETRC": str(tmp_path / "netrc")}
    if cause == "no network":
        environ.update(WANDB_API_KEY="0" * 40, WANDB_INIT_TIMEOUT="2")
    wandb_environ(**environ)
    record = run(tiny_cfg("logger=wandb", *TWO_TASKS), tmp_path / "run")

    assert init_modes == [None, "offline"]
    logged = _run_completely_logged(record, tmp_path / "run")  # nothing was lost
    assert logged.folder.name.startswith("offline-run-")
    # wandb also logs its failed init to its debug log, through the "wandb" logger.
    (warning,) = [r for r in _warnings(caplog) if r.name != "wandb"]
    message = warning.getMessage()
    error = "UsageError: No API key configured" if cause == "no API key" else "CommError: "
    assert f"W&B could not start online ({error}" in message
    assert f"Logging continues offline in {logged.folder};" in message
    assert message.endswith(f"upload it later with: wandb sync {logged.folder}")


@pytest.mark.parametrize(
    ("environment", "errors", "calls", "reason"),
    [
        # Not about reaching W&B: no offline start.
        ({}, [ValueError("bad value")], [None], "starting the W&B run failed (ValueError"),
        # Asked for offline: nothing to fall back to.
        ({"WANDB_MODE": "offline"}, [UsageError("no key")], [None], "run failed (UsageError"),
        # The offline start fails too: both errors in one warning.
        (
            {},
            [UsageError("no key"), RuntimeError("disk full")],
            [None, "offline"],
            "the online start failed (UsageError: no key), and starting offline failed "
            "(RuntimeError: disk full)",
        ),
    ],
)
def test_other_start_failures_turn_logging_off_with_one_warning(
    environment,
    errors,
    calls,
    reason,
    wandb_environ,
    tiny_cfg,
    tmp_path,
    cached_data,
    monkeypatch,
    caplog,
):
    wandb_environ(**environment)
    modes = []

    def failing_init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        raise errors[len(modes) - 1]

    monkeypatch.setattr(wandb, "init", failing_init)
    record = run(tiny_cfg("logger=wandb", *TWO_TASKS), tmp_path / "run")

    assert record["status"] == "completed" and record["tasks_completed"] == 2
    assert modes == calls
    (warning,) = _warnings(caplog)
    assert "W&B logging is off for the rest of this run" in warning.getMessage()
    assert reason in warning.getMessage()
    assert not (tmp_path / "run" / "wandb").exists()  # no wandb.init got as far


# -- off, broken, grouped ----------------------------------------------------------------------
def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_disabled_mode_runs_without_touching_wandb(
    tiny_cfg, tmp_path, cached_data, monkeypatch, caplog
):
    def no_init(*args, **kwargs):
        raise AssertionError("wandb.init called with mode=disabled")

    monkeypatch.setattr(wandb, "init", no_init)
    cfg = tiny_cfg("method=finetune", "logger=wandb", "logger.mode=disabled")
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "record.json"]
    assert not _warnings(caplog)


@pytest.mark.parametrize("broken", ["init", "log", "finish"])
def test_a_wandb_failure_is_one_warning_and_the_run_completes(
    broken, tiny_cfg, tmp_path, cached_data, monkeypatch, caplog
):
    calls, real_finish = [], wandb.Run.finish

    def fail(*args, **kwargs):
        calls.append(args[0] if args else None)
        if broken == "finish" and len(calls) > 1:
            return real_finish(*args, **kwargs)  # only the logger's own call fails
        raise ConnectionError("network is unreachable")

    target = wandb if broken == "init" else wandb.Run
    monkeypatch.setattr(target, broken, fail)
    overrides = ["method=finetune", "task.n_tasks=3", "train.epochs=2"]
    record = run(tiny_cfg("logger=wandb", "logger.mode=offline", *overrides), tmp_path / "run")
    if broken == "finish":
        real_finish(calls[0])  # close what the failed call left open

    on_disk = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == on_disk["status"] == "completed"
    assert on_disk["tasks_completed"] == 3 and on_disk["summary"]["acc"] == record["summary"]["acc"]
    (warning,) = _warnings(caplog)
    assert warning.name == "cl_bayes.loggers.wandb"
    assert "W&B logging is off for the rest of this run" in warning.getMessage()
    assert "ConnectionError: network is unreachable" in warning.getMessage()
    if broken == "log":
        assert len(calls) == 1  # nothing more was tried after the failure
        logged = RunFile(tmp_path / "run")
        assert [e.exit_code for e in logged.exits] == [1]  # the broken W&B run is closed
        assert "acc" not in logged.summary


def test_a_failing_epoch_metrics_is_one_warning_and_the_run_completes(
    tiny_cfg, tmp_path, cached_data, monkeypatch, caplog
):
    calls = []

    def epoch_metrics(self, model):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("no KL for this model")
        return {"kl": 1.5}

    # Fine-tuning with a method's optional epoch_metrics, broken at the second epoch.
    monkeypatch.setattr(Finetune, "epoch_metrics", epoch_metrics, raising=False)
    overrides = ["method=finetune", "task.n_tasks=3", "train.epochs=2"]
    record = run(tiny_cfg("logger=wandb", "logger.mode=offline", *overrides), tmp_path / "run")

    on_disk = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == on_disk["status"] == "completed"
    assert on_disk["tasks_completed"] == 3
    (warning,) = _warnings(caplog)
    assert "W&B logging is off for the rest of this run" in warning.getMessage()
    assert "logging an epoch failed (ValueError: no KL for this model)" in warning.getMessage()
    assert len(calls) == 2  # not called again once logging is off
    logged = RunFile(tmp_path / "run")
    assert [(row["epoch"], row["train/kl"]) for row in logged.rows("train/loss")] == [(0, 1.5)]
    assert [e.exit_code for e in logged.exits] == [1]


def test_a_resumed_run_logs_its_remaining_tasks_to_the_same_wandb_run(
    tiny_cfg, tmp_path, cached_data, monkeypatch, caplog
):
    overrides = ["method=finetune", "task.n_tasks=3", "train.epochs=2"]
    real_train, calls = cl_bayes.run.train_task, []

    def interrupt_second_task(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(cl_bayes.run, "train_task", interrupt_second_task)
    with pytest.raises(KeyboardInterrupt):  # started without W&B, cut during task 2
        run(tiny_cfg(*overrides), tmp_path / "run")
    monkeypatch.setattr(cl_bayes.run, "train_task", real_train)
    resume = f"resume={tmp_path / 'run'}"
    # The logger is taken from the resuming command line, not from the checkpoint.
    record = run(tiny_cfg(*overrides, resume, "logger=wandb", "logger.mode=offline"), tmp_path)

    assert record["status"] == "completed" and not _warnings(caplog)
    logged = RunFile(tmp_path / "run")
    assert logged.run.run_id == record["run_id"]
    assert [row["task"] for row in logged.rows("eval/average_accuracy")] == [1, 2]
    assert [row["epoch"] for row in logged.rows("train/loss")] == [2, 3, 4, 5]
    assert logged.summary["acc"] == record["summary"]["acc"]


def test_a_multirun_groups_its_jobs_by_the_sweep_directory():
    assert sweep_group() is None  # not inside Hydra
    with inside_hydra("hydra.sweep.dir=multirun/2026-11-22/10-00-00", mode=RunMode.MULTIRUN) as cfg:
        assert sweep_group() == "2026-11-22/10-00-00"
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.mode = RunMode.RUN  # a single run under Hydra
        HydraConfig.instance().set_config(cfg)
        assert sweep_group() is None


def test_bad_settings_are_one_clear_error(monkeypatch):
    with pytest.raises(ConfigError, match=r"logger\.mode must be one of online, offline, disabled"):
        WandbLogger(mode="offlne")
    with pytest.raises(ConfigError, match=r"logger\.tags must be a list"):
        WandbLogger(tags="vcl")
    with pytest.raises(ConfigError, match=r"logger\.project must name a W&B project"):
        WandbLogger(project="")
    for alias in ("dryrun", "run", "shared"):  # what wandb itself accepts
        monkeypatch.setenv("WANDB_MODE", alias)
        assert WandbLogger().mode is None
    monkeypatch.setenv("WANDB_MODE", "offlne")
    # wandb would reject it at the start, even with logger.mode given, in a pydantic traceback.
    for mode in (None, "offline"):
        with pytest.raises(ConfigError, match=r"WANDB_MODE must be one of online, .*'offlne'"):
            WandbLogger(mode=mode)
    assert WandbLogger(mode="disabled").mode == "disabled"  # wandb is not started then


def test_the_configs_mirror_the_constructor(compose_cfg):
    cfg = compose_cfg("logger=wandb")
    assert cfg.logger._target_ == "cl_bayes.loggers.wandb.WandbLogger"
    assert set(cfg.logger) - {"_target_"} == {"project", "entity", "group", "tags", "mode", "dir"}
    # Unset by default: W&B's settings and WANDB_* variables decide (see the tests above).
    assert (cfg.logger.project, cfg.logger.entity, cfg.logger.mode) == (None, None, None)
    logger = instantiate(cfg.logger)
    assert (logger.project, logger.entity, logger.mode, logger.dir) == (None, None, None, None)
    assert logger.tags == []
    assert not logger.active  # nothing is opened before the run starts
    default = instantiate(compose_cfg().logger)
    assert type(default).__name__ == "Logger" and not default.active
