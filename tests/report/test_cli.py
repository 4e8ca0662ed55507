"""The command line and the files it writes: byte-identical again, the README block, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cl_bayes.errors import UserError
from cl_bayes.report import build_report, main
from cl_bayes.report.markdown import README_BEGIN, README_END
from tests.report.sample_records import (
    COMMAND,
    generate,
    make_record,
    three_seeds,
    write_records,
)


def test_regenerating_gives_byte_identical_files(tmp_path):
    records = [*three_seeds("p"), *three_seeds("q"), make_record("f", status="failed")]
    first = generate(tmp_path, *records, out="first")
    second = generate(tmp_path, *records, out="second")
    assert first == second
    assert sorted(os.listdir(tmp_path / "first")) == ["leaderboard.html", "leaderboard.md"]


README = "# Project\n\nIntro.\n\n## Leaderboard\n\n{begin}\nold table\n{end}\n\n## After\n"


def test_readme_block_is_replaced_and_regenerating_keeps_it(tmp_path):
    results = write_records(tmp_path / "results", *three_seeds())
    readme = tmp_path / "README.md"
    readme.write_text(README.format(begin=README_BEGIN, end=README_END))
    argv = ["--results", str(results), "--readme", str(readme)]
    assert main(argv) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Project\n\nIntro.\n\n## Leaderboard\n\n" + README_BEGIN + "\n")
    assert text.endswith(README_END + "\n\n## After\n")
    block = text.split(README_BEGIN)[1].split(README_END)[0]
    assert "old table" not in block
    assert "### split_mnist · task-incremental (multi-head) · p" in block
    assert "| 1 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 |" in block
    assert "Runs not averaged" not in block
    assert "python -m cl_bayes.report --results" in block
    # --out defaults to the results folder.
    assert (results / "leaderboard.md").is_file() and (results / "leaderboard.html").is_file()
    assert main(argv) == 0
    assert readme.read_text(encoding="utf-8") == text


def test_readme_without_markers_is_a_clear_error_and_nothing_is_written(tmp_path, caplog):
    results = write_records(tmp_path / "results", *three_seeds())
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\n{README_END}\n")
    with pytest.raises(UserError, match="README.md needs exactly one line <!-- leaderboard:begin"):
        build_report(results, tmp_path / "out", readme, COMMAND)
    assert not (tmp_path / "out").exists()
    assert readme.read_text() == f"# Project\n\n{README_END}\n"
    assert main(["--results", str(results), "--readme", str(readme)]) == 2
    assert README_BEGIN in caplog.text and README_END in caplog.text


def test_no_records_is_one_clear_error_from_the_command_line(tmp_path):
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cl_bayes.report", "--results", str(empty)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert f"no run records in {empty / 'runs'}" in out
    assert "python -m cl_bayes task=split_mnist" in out
    assert sorted(os.listdir(tmp_path)) == ["empty"]
