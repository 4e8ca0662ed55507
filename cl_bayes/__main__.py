"""Command line: ``python -m cl_bayes task=split_mnist method=finetune scenario=task``."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cl_bayes.allocator import keep_freed_memory
from cl_bayes.config import register_task_sequences
from cl_bayes.errors import UserError
from cl_bayes.run import run

log = logging.getLogger("cl_bayes")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the experiment ``cfg`` describes.

    A user error is logged as one line (exit code 2); Ctrl-C or SIGTERM as one line saying how
    to continue (exit code 130). The run record is written in both cases. In a multirun sweep
    a user error fails its own job only: Hydra runs the other jobs and reports the failure
    at the end.
    """
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    try:
        record = run(cfg, output_dir)
    except UserError as error:
        log.error(f"error: {error}")
        if hydra_config.mode == RunMode.MULTIRUN:
            # Re-raised without the frames below, so the sweep's final report stays short.
            raise UserError(f"job {hydra_config.job.num} failed: {error}") from None
        sys.exit(2)
    except KeyboardInterrupt as error:
        log.error(
            f"interrupted ({error or 'Ctrl-C'}): the record keeps the completed tasks; "
            f"continue with resume={cfg.resume or output_dir}"
        )
        sys.exit(130)
    return record["summary"].get("acc")


if __name__ == "__main__":
    keep_freed_memory()
    register_task_sequences()
    main()
