"""Smoke test of the benchmark runner: `python -m benchmarks.run --quick --only render,decode`
into a temporary report; checks the report's structure and that the ratios are numbers.
No timing assertions: the machine decides the values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, out: Path, only: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", only, "--out", str(out)]
        + ["--tmp", str(tmp_path / "work"), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


def test_quick_run_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    proc = _bench(tmp_path, out, "render,decode")
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

    # --update reruns one benchmark and keeps the other's section (from the .json twin)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["name"] for r in saved] == ["render", "decode"]
    old_decode = text.split("## decode:")[1]
    proc = _bench(tmp_path, out, "render", "--update")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    updated = out.read_text()
    assert updated.split("## decode:")[1] == old_decode
    assert "## render:" in updated and "sections come from runs at" in updated
    assert [r["name"] for r in json.loads(out.with_suffix(".json").read_text())] == [
        "render",
        "decode",
    ]


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
