"""docs/coco.md runs: its commands, in order, at toy size on COCO-MINI.

The first bash block of the recipe (the settings) is replaced by toy values; every other
block runs as written, the blocks marked "per machine" once per slice I = 0 .. MACHINES-1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from lcdata.store.layout import read_attrs

DOC = Path(__file__).resolve().parents[1] / "docs" / "coco.md"
PER_MACHINE = "# per machine: I = 0 .. MACHINES-1"


def recipe_blocks(text: str) -> list[str]:
    """The bash blocks of the `## The recipe` section, in order."""
    section = text.split("## The recipe", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toy_settings(coco: Path, out: Path) -> str:
    return "\n".join(
        [
            f"COCO={coco}",
            f"OUT={out}",
            "VIEWS=1",
            'GEOMETRY="--preset coco --input-size 96 --samples-per-shard 16"',
            "MACHINES=2",
            "GPUS=1",
            "MODEL=tiny",
            "STEPS=3",
            "BATCH=2",
            "AMP=off",
            "DEVICE=cpu",
            "TEACHER_PRECISION=fp32",
            "DASK_HOST=127.0.0.1",
            f"DASK_PORT={_free_port()}",
            "DASK_WORKERS=1",
            'EVAL_OPTS="--max-images 3"',
        ]
    )


def test_blocks_are_found_and_the_settings_block_names_every_variable() -> None:
    blocks = recipe_blocks(DOC.read_text())
    assert len(blocks) >= 6
    settings = {line.split("=", 1)[0] for line in blocks[0].splitlines() if "=" in line}
    used = set(re.findall(r"\$\{?([A-Z_]+)", "\n".join(blocks[1:])))
    assert used - {"I", "SCHEDULER_PID", "WORKER_PID"} <= settings
    assert sum(PER_MACHINE in b for b in blocks) == 2


def test_the_recipe_runs_at_toy_size(coco_mini: Path, tmp_path: Path) -> None:
    out = tmp_path / "lcpose"
    out.mkdir()
    blocks = recipe_blocks(DOC.read_text())
    script = ["set -euo pipefail", toy_settings(coco_mini, out)]
    for block in blocks[1:]:
        if PER_MACHINE in block:
            script.append(f"for I in $(seq 0 $((MACHINES - 1))); do\n{block}\ndone")
        else:
            script.append(block)
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # lcdata, trainer, torchrun, dask
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = "1"
    assert shutil.which("torchrun", path=env["PATH"]) and shutil.which("dask", path=env["PATH"])
    res = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # every stage's product is there and complete
    cache, lc = read_attrs(out / "cache.zarr"), read_attrs(out / "lc.zarr")
    assert cache["complete"] and cache["stages"] == ["gt", "teacher"]
    assert lc["complete"] and lc["correction"]["mode"] == "max"
    assert "gt needs about" in res.stderr and "correct max needs about" in res.stderr
    for run in ("teacher", "student"):
        metrics = json.loads((out / f"{run}-val2017.metrics.json").read_text())
        assert "AP" in json.dumps(metrics)
