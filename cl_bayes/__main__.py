"""Command line: ``cl-bayes task=split_mnist method=finetune scenario=task``.

``python -m cl_bayes ...`` does the same.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cl_bayes.allocator import keep_freed_memory
from cl_bayes.checkpoint import CHECKPOINT_NAME
from cl_bayes.config import CONF_DIR, register_task_sequences
from cl_bayes.errors import UserError
from cl_bayes.job import FreshOutputDir, report
from cl_bayes.run import run


# An absolute path: Hydra reads a relative one against this file under `python -m cl_bayes` but
# as a package path (`pkg://conf`, not found) under the `cl-bayes` command; CONF_DIR is the
# checkout's conf/ or the installed package's copy.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the experiment ``cfg`` describes.

    A user error is reported as one line on stderr (exit code 2); Ctrl-C or SIGTERM as one
    line saying how to continue, or that no task completed (exit code 130). Once training has
    started the run record says how the run ended (``failed`` or ``interrupted``, with the
    completed tasks); an error found before (a bad setting, missing data) leaves no record,
    and no output directory where Hydra's files were all it held. In a multirun sweep a user
    error fails its own job only: Hydra runs the other jobs and reports the failure at the end.
    """
    # In every job, whichever launcher runs it (a joblib or Ray worker never runs the
    # command line's own code); setting it again is harmless.
    keep_freed_memory()
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    fresh = FreshOutputDir.find(output_dir, hydra_config.output_subdir)
    try:
        record = run(cfg, output_dir)
    except UserError as error:
        if fresh is not None:
            keep = [Path(hydra_config.runtime.cwd)]
            if cfg.get("resume"):
                keep.append(Path(str(cfg.resume)).expanduser())
            fresh.remove(keep)
        report(f"error: {error}")
        if hydra_config.mode == RunMode.MULTIRUN:
            # Re-raised without the frames below, so the sweep's final report stays short;
            # named by its overrides, as the sweep's progress lines name jobs.
            overrides = " ".join(hydra_config.overrides.task)
            raise UserError(f"the job with {overrides} failed: {error}") from None
        sys.exit(2)
    except KeyboardInterrupt as error:
        run_dir = Path(cfg.resume).expanduser() if cfg.resume else output_dir
        if (run_dir / CHECKPOINT_NAME).is_file():
            advice = f"the record keeps the completed tasks; continue with resume={run_dir}"
        else:
            advice = "no task completed; nothing to resume"
        report(f"interrupted ({error or 'Ctrl-C'}): {advice}")
        sys.exit(130)
    return record["summary"].get("acc")


def cli() -> None:
    """``cl-bayes <overrides>``, the same as ``python -m cl_bayes <overrides>``."""
    register_task_sequences()
    main()


if __name__ == "__main__":
    cli()
