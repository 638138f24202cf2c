"""Smoke test of the benchmark runner: `python -m benchmarks.run --quick --only render,decode`
into a temporary report; checks the report's structure and that the ratios are numbers.
No timing assertions: the machine decides the values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_run_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "render,decode",
            "--out",
            str(out),
            "--tmp",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    for heading in ("# Benchmarks", "## Machine", "## Summary", "## render:", "## decode:"):
        assert heading in text
    assert re.search(r"- CPU: .+, \d+ cores", text)
    assert re.search(r"torch \S+, zarr \S+", text)

    rows = [line for line in text.splitlines() if line.startswith("| [")]
    names = {re.match(r"\| \[(\w+)\]", row).group(1) for row in rows}
    assert names == {"render", "decode"}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[3] == "-":  # a goal-less extra line may have no value
            continue
        float(cells[2].replace(",", ""))  # the ratio is a number
        assert cells[4] in ("met", "MISSED", "no goal")
    # the render benchmark checked that the loop and the vectorised encoder agree
    assert "| yes |" in text.split("## render:")[1].split("## decode:")[0]
    # the printed results name the ratio as well
    assert "loop time / vectorised time" in proc.stdout


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--only", "nope", "--out", str(tmp_path / "x")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown benchmark(s) nope" in proc.stderr
    assert not (tmp_path / "x").exists()
