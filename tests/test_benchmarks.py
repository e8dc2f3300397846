"""Smoke runs of the benchmarks that print performance figures, so they cannot rot unnoticed.

Each runs as a user runs it (a subprocess, from the repository root) in its ``--smoke`` mode:
a tiny random model for two steps on the CPU. The figures they print are not checked (they
are timings of a tiny model); the shape of the output is: every table row, and the last line
that the lead's scripts parse.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str, timeout: int = 300) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_peer_comparison_smoke():
    out = run_benchmark("peer_comparison.py", "--smoke")
    lines = [line for line in out.splitlines() if line.strip()]
    assert re.fullmatch(r"speedup_vs_peer=\d+\.\d{2} mfu_cpu=(\d+\.\d{3}|n/a)", lines[-1]), lines[-1]
    assert "fp32 matmul peak:" in out and "best of 2" in out, out
    for row in ("tokens/s (non-pad)", "s per step", "peak RSS (MB)", "held-out NLL after", "s to common NLL",
                "s to the other's final NLL"):
        assert re.search(rf"^{re.escape(row)}.*\d", out, re.M), f"row {row!r} missing:\n{out}"
    tokens_per_s = re.search(r"^tokens/s \(non-pad\)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert tokens_per_s and all(float(x) > 0 for x in tokens_per_s.groups()), out


@pytest.mark.slow
def test_gpu_card_smoke():
    out = run_benchmark("gpu_card.py", "--smoke")
    assert "SmolLM2-360M architecture" in out, out
    for variant in ("preset", "model-forward loss", "TRL fused head"):
        row = re.search(rf"^{re.escape(variant)}.*?\s([\d.]+)\s+[\d.]+\s+\S+\s+n/a \(CPU\)\s+[\d.]+$", out, re.M)
        assert row and float(row.group(1)) > 0, f"variant {variant!r}:\n{out}"
    assert re.search(r"^Liger kernels.*(skipped|\d)", out, re.M), out
    assert re.search(r"^padding-free \(FlashAttention 2\)\s+skipped: ", out, re.M), out
    assert re.search(r"batched greedy generation .* [\d.]+ tokens/s", out), out
    assert "T4 fit: not measured (no GPU)" in out, out
