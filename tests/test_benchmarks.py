"""Every benchmark still runs: each script in benchmarks/ in its ``--smoke`` mode.

A benchmark is any ``benchmarks/*.py`` not starting with ``_`` (those are shared helpers). The
smoke mode takes a few seconds, uses tiny sizes and goes through the same code path end to end;
it must exit 0 and print at least one ``ratio`` line against its same-run baseline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
RATIO = re.compile(r"^\s*ratio\b.*?\d[\d,]*(\.\d+)?x", re.MULTILINE)


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 3, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_smoke(script: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPKI_")}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} --smoke: exit {proc.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert RATIO.search(proc.stdout), f"{script.name} printed no ratio line:\n{proc.stdout[-3000:]}"
