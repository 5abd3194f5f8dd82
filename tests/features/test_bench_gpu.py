"""bench/gpu.py keeps working on a CPU-only machine (CI): the small run prints every row and
its ratios. How fast is not asserted here (a timing in a test fails on a loaded machine); the
bench's own --check says whether extraction keeps up with the bare forward pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def test_the_small_gpu_bench_runs_here_and_prints_its_ratios(tmp_path):
    table = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(BENCH), "--small", "--out", str(table)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in table.read_text().splitlines() if line.startswith("| distilhubert")]
    assert len(rows) == 4  # fp32 and bf16, one layer and all layers
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        bare, cached, ratio, streamed, streamed_ratio, steps = (float(c.replace(",", "")) for c in cells[3:9])
        assert abs(ratio - cached / bare) <= 0.1 * ratio  # the printed rates have two significant figures
        assert streamed > 0 and streamed_ratio > 0 and steps > 0
    assert re.search(r"bf16-mixed \| last \|.*\| (\d\.\d+|\d(\.\d+)?e-\d+) \|$", rows[2])  # the measured difference
