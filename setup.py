"""Build hook: the wheel ships the top-level ``conf/`` and ``tasks/`` inside the package.

The two folders stay at the top of the repository, where users and Hydra's docs expect them,
and are the only copy under version control. A regular install has no repository around the
package, so ``build_py`` copies them to ``cl_bayes/conf`` and ``cl_bayes/tasks`` in the build
tree, and ``cl_bayes.config`` finds them there. An editable install builds nothing and reads
the top-level folders in place. ``MANIFEST.in`` puts them in the sdist, so a wheel built from
the sdist has them too. Everything else about the package is in ``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_FOLDERS = ("conf", "tasks")


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``conf/`` and ``tasks/`` into the built package."""

    def run(self) -> None:
        """Build the package, then replace its copies of the configuration folders."""
        super().run()
        if self.editable_mode:
            return
        for folder in SHIPPED_FOLDERS:
            target = Path(self.build_lib, "cl_bayes", folder)
            # A build folder kept from an earlier build must not keep a deleted config file.
            shutil.rmtree(target, ignore_errors=True)
            self.copy_tree(folder, str(target))


setup(cmdclass={"build_py": BuildPyWithConfigs})
