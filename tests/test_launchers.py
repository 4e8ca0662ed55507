"""Multirun sweeps through each launcher preset, for real, with tiny runs.

The Ray tests need the Ray launcher, which lives in an environment of its own (`make
test-ray`); elsewhere they are skipped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cl_bayes.config import CONF_DIR, register_task_sequences
from cl_bayes.run import auto_device
from tests.conftest import TINY, run_cli

PRESETS = CONF_DIR / "hydra" / "launcher"
# Configs the launcher plugins register under hydra/launcher: a file of the same name in
# conf/ would replace the plugin's config rather than add to it.
PLUGIN_CONFIGS = {"basic", "joblib", "submitit_local", "submitit_slurm", "ray", "ray_aws"}
NO_RAY = "hydra-ray-launcher is not installed here; `make test-ray` runs this in .venv-ray"


def launcher_config(preset: str, *overrides: str):
    """``hydra.launcher`` as ``python -m cl_bayes hydra/launcher=<preset>`` composes it."""
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[f"hydra/launcher={preset}", *overrides],
            return_hydra_config=True,
        )
    return cfg.hydra.launcher


def sweep(tmp_path: Path, *overrides: str, timeout: float = 600):
    """A tiny multirun into ``tmp_path``; returns (process, output, records by seed).

    No option selects the progress lines: conf/config.yaml does, for every run.
    """
    results = tmp_path / "results"
    proc = run_cli(
        "-m",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"results_dir={results}",
        *overrides,
        cwd=tmp_path,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    records = [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]
    return proc, out, records


def assert_progress_lines(out: str, overrides_of_jobs: list[str]) -> None:
    """One "job k/N done" line per job: k = 1..N once each, every job's overrides once."""
    lines = re.findall(r"job (\d+)/(\d+) done \(\d+ s\): (.*?)  ACC=\d+\.\d\d%", out)
    n = len(overrides_of_jobs)
    assert sorted(int(k) for k, _, _ in lines) == list(range(1, n + 1)), out[-5000:]
    assert {int(total) for _, total, _ in lines} == {n}
    assert sorted(shown for _, _, shown in lines) == sorted(overrides_of_jobs)


# --- presets -------------------------------------------------------------------------------


def test_no_preset_shadows_a_plugins_own_config():
    names = {path.stem for path in PRESETS.glob("*.yaml")}
    assert names >= {
        "local_parallel",
        "gpu_shared",
        "local_submitit",
        "slurm",
        "ray_local",
        "ray_cluster",
    }
    assert not names & PLUGIN_CONFIGS


def test_local_parallel_runs_one_job_per_core_with_joblib():
    launcher = launcher_config("local_parallel")
    assert launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert launcher.n_jobs == -1 and launcher.prefer == "processes"
    assert launcher_config("local_parallel", "hydra.launcher.n_jobs=4").n_jobs == 4
    instantiate(launcher)  # every key is one the launcher takes


def test_gpu_shared_is_local_parallel_with_a_few_jobs_at_once():
    launcher = launcher_config("gpu_shared")
    parallel = launcher_config("local_parallel")
    assert launcher._target_ == parallel._target_ and launcher.prefer == "processes"
    # A few jobs, not one per CPU core (local_parallel): what suits a GPU is measured.
    assert launcher.n_jobs == 4
    assert launcher_config("gpu_shared", "hydra.launcher.n_jobs=8").n_jobs == 8
    instantiate(launcher)


def test_slurm_gives_each_job_one_gpu_and_leaves_the_partition_to_the_user():
    launcher = launcher_config("slurm")
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.nodes == 1
    assert launcher.cpus_per_task >= 1 and launcher.mem_gb > 0
    assert launcher.timeout_min > 0 and launcher.max_num_timeout == 0
    assert "partition" in launcher and launcher.partition is None
    assert launcher_config("slurm", "hydra.launcher.partition=gpu").partition == "gpu"
    assert str(launcher.submitit_folder).endswith("/.submitit/%j")
    instantiate(launcher)


def test_the_slurm_preset_becomes_these_sbatch_directives(tmp_path, monkeypatch):
    """What the launcher would hand to sbatch, stopped just before submitting it."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    class Submitted(Exception):
        pass

    script = {}

    def map_array(self, fn, *arguments):
        script["text"] = self._executor._make_submission_file_text("<command>", "<uid>")
        script["jobs"] = list(zip(*arguments, strict=True))
        raise Submitted

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is here"
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                f"hydra.sweep.dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted):
        launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    directives = set(re.findall(r"#SBATCH (\S+)", script["text"]))
    assert {
        "--gpus-per-node=1",
        "--ntasks-per-node=1",
        "--nodes=1",
        "--cpus-per-task=4",
        "--mem=32GB",
        "--time=240",
        "--partition=gpu",
        "--job-name=cl_bayes",
        f"--output={tmp_path}/.submitit/%j/%j_0_log.out",
    } <= directives
    assert [job[0] for job in script["jobs"]] == [["seed=0"], ["seed=1"]]


def test_local_submitit_has_a_timeout_and_hides_no_gpu_it_was_not_asked_for():
    launcher = launcher_config("local_submitit")
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert launcher.timeout_min > 0 and launcher.gpus_per_node == 0
    instantiate(launcher)


def test_ray_presets_start_a_local_instance_or_join_a_cluster_with_one_gpu_per_job():
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason=NO_RAY)
    local = launcher_config("ray_local")
    assert local._target_.endswith("ray_launcher.RayLauncher")
    assert local.ray.init.address is None and local.ray.init.include_dashboard is False
    assert local.ray.remote.num_cpus == 1 and local.ray.remote.max_retries == 0
    cluster = launcher_config("ray_cluster")
    assert cluster.ray.init.address == "auto"
    assert cluster.ray.remote.num_gpus == 1 and cluster.ray.remote.max_retries == 0
    # The launcher adds object_store_memory unless set, and ray.init refuses it when joining a
    # cluster: the preset's explicit null must survive the launcher's setdefault.
    init = OmegaConf.create(OmegaConf.to_container(cluster.ray.init))
    init.setdefault("object_store_memory", 78643200)
    assert init.object_store_memory is None
    for key in ("num_cpus", "num_gpus"):
        assert init.get(key) is None
    address = launcher_config("ray_cluster", "hydra.launcher.ray.init.address=ray://head:10001")
    assert address.ray.init.address == "ray://head:10001"


# --- sweeps, for real ------------------------------------------------------------------------


def test_a_joblib_sweep_writes_a_record_per_job_and_the_report_ranks_them(tmp_path, data_root):
    proc, out, records = sweep(
        tmp_path,
        "method=finetune,joint",
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=2",
    )
    assert "Joblib.Parallel(n_jobs=2" in out
    assert sorted(r["method"] for r in records) == ["finetune", "joint"]
    assert all(r["status"] == "completed" for r in records)
    assert_progress_lines(out, ["method=finetune", "method=joint"])

    report = subprocess.run(
        [sys.executable, "-m", "cl_bayes.report", "--results", str(tmp_path / "results")]
        + ["--out", str(tmp_path / "report")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    table = (tmp_path / "report" / "leaderboard.md").read_text()
    # The ranked rows (the "after each task" table below them names the groups too).
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    rows = [row for row in rows if "default" in row]
    assert len(rows) == 2
    for record in records:
        acc = f"{100 * record['summary']['acc']:.2f}"
        assert any(f"| {record['method']} |" in row and acc in row for row in rows), table
    page = (tmp_path / "report" / "leaderboard.html").read_text()
    assert "finetune" in page and "joint" in page


def test_parallel_jobs_writing_into_one_results_dir_leave_every_record_intact(tmp_path, data_root):
    proc, out, records = sweep(
        tmp_path,
        "method=finetune",
        "seed=0,1,2,3",
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=4",
    )
    runs = tmp_path / "results" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{r['run_id']}.json" for r in records)
    assert len({r["run_id"] for r in records}) == 4
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3]
    for record in records:
        assert record["status"] == "completed" and record["tasks_completed"] == 5
        assert f"-seed{record['seed']}-" in record["run_id"]
        assert record["config"]["seed"] == record["seed"]
        # The job's own copy is the same record: no write of another job got into it.
        assert json.loads(Path(record["record_path"]).read_text()) == record
    # Four different processes wrote them.
    assert len({Path(r["record_path"]).parent.name for r in records}) == 4
    assert_progress_lines(out, [f"seed={s}" for s in range(4)])
    assert not (tmp_path / "sweep" / ".sweep_progress").exists()


def test_a_gpu_shared_sweep_runs_its_jobs_at_once_each_on_the_device_auto_gives_it(tmp_path):
    proc, out, records = sweep(
        tmp_path,
        "task=synthetic",
        "task.n_tasks=2",
        "method=finetune",
        "device=auto",
        "seed=0,1",
        "hydra/launcher=gpu_shared",
        "hydra.launcher.n_jobs=2",
    )
    assert "Joblib.Parallel(n_jobs=2" in out
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["status"] == "completed" and r["tasks_completed"] == 2 for r in records)
    gpus = torch.cuda.device_count()
    devices = {r["seed"]: r["device"] for r in records}  # seed k is job k here
    assert devices == {k: str(auto_device(k, gpus)) for k in (0, 1)}
    assert_progress_lines(out, ["seed=0", "seed=1"])


def test_a_submitit_local_sweep_writes_a_record_per_job(tmp_path, data_root):
    proc, out, records = sweep(
        tmp_path, "method=finetune", "seed=0,1", "hydra/launcher=local_submitit"
    )
    assert "Submitit 'local' sweep output dir" in out
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["status"] == "completed" for r in records)
    # Each job ran as a submitit job of its own, with its own log.
    logs = list((tmp_path / "sweep" / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2
    assert_progress_lines(out, ["seed=0", "seed=1"])


def test_a_ray_local_sweep_writes_a_record_per_job(tmp_path, data_root):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason=NO_RAY)
    proc, out, records = sweep(
        tmp_path,
        "method=finetune",
        "seed=0,1",
        "hydra/launcher=ray_local",
        "hydra.launcher.ray.init.num_cpus=2",
    )
    assert "Ray Launcher is launching 2 jobs" in out
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["status"] == "completed" for r in records)
    assert_progress_lines(out, ["seed=0", "seed=1"])
