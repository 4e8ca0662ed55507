"""Packaging: a regular install gets the configuration folders and the ``cl-bayes`` command.

``pip install .`` and ``pip install git+<repo>`` build the wheel from the source tree;
``python -m build`` (and pip, from PyPI) builds it from the sdist. Both wheels must carry
``conf/`` and ``tasks/`` inside the package, since nothing else of the repository is installed.
The CI installs such a wheel into a fresh environment and runs ``cl-bayes`` (``.ci/run``).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from cl_bayes.config import REPO_ROOT

# What a build reads; the copy keeps the build's files out of the checkout.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "cl_bayes", "conf", "tasks")


def _build(kind: str, source: Path, out: Path) -> Path:
    """Run the PEP 517 hook ``build_<kind>`` of setuptools in ``source``; the built file."""
    out.mkdir()
    hook = f"import sys, setuptools.build_meta as b; print(b.build_{kind}(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-c", hook, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / proc.stdout.strip().splitlines()[-1]


def _dist_info(wheel: Path) -> str:
    """``cl_bayes-<version>.dist-info``, the metadata folder a wheel's name implies."""
    name, version = wheel.name.split("-")[:2]
    return f"{name}-{version}.dist-info"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Wheels built from a copy of the source tree and from the sdist built from that copy."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    sdist = _build("sdist", source, base / "sdist")
    with tarfile.open(sdist) as archive:
        # filter= exists from Python 3.10.12 and 3.11.4 on; the sdist is our own.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(base / "unpacked", **safe)
    (unpacked,) = (base / "unpacked").iterdir()
    return {
        "source tree": _build("wheel", source, base / "wheel_from_source"),
        "sdist": _build("wheel", unpacked, base / "wheel_from_sdist"),
    }


@pytest.mark.parametrize("built_from", ["source tree", "sdist"])
def test_the_wheel_ships_every_config_and_task_file_inside_the_package(wheels, built_from):
    names = set(zipfile.ZipFile(wheels[built_from]).namelist())
    assert "cl_bayes/conf/config.yaml" in names
    expected = {
        f"cl_bayes/{path.relative_to(REPO_ROOT).as_posix()}"
        for path in [*(REPO_ROOT / "conf").rglob("*.yaml"), *(REPO_ROOT / "tasks").glob("*.yaml")]
    }
    assert len(expected) > 20
    assert expected <= names, sorted(expected - names)
    # Nothing lands beside the package in site-packages (no top-level conf/ or tasks/).
    assert {name.split("/")[0] for name in names} == {"cl_bayes", _dist_info(wheels[built_from])}


@pytest.mark.parametrize("built_from", ["source tree", "sdist"])
def test_the_wheel_installs_the_cl_bayes_command(wheels, built_from):
    with zipfile.ZipFile(wheels[built_from]) as wheel:
        entry_points = wheel.read(f"{_dist_info(wheels[built_from])}/entry_points.txt").decode()
    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    assert parser["console_scripts"]["cl-bayes"] == "cl_bayes.__main__:cli"
