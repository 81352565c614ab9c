"""Shared by the benchmarks: machine facts, percentiles, and the result file format.

Every figure is reported beside a baseline measured in the same run (the machines are noisy):
bench/results/<name>.json holds {name, figures, baseline, ratio, machine, created_at, notes}.
"""

import contextlib
import json
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        info["cpu"] = model
    except (OSError, StopIteration):
        pass
    with contextlib.suppress(ValueError, OSError):
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    try:
        import torch

        if "torch" in __import__("sys").modules:
            info["torch"] = torch.__version__
    except ImportError:
        pass
    with contextlib.suppress(OSError):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return info


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
    }


def write_result(
    name: str,
    *,
    figures: dict,
    baseline: dict,
    ratio: dict,
    notes: str = "",
    aims: dict | None = None,
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "name": name,
        "figures": figures,
        "baseline": baseline,
        "ratio": ratio,
        "aims": aims or {},
        "notes": notes,
        "machine": machine(),
        "created_at": datetime.now(UTC).isoformat(),
    }
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(
        json.dumps(
            {"name": name, "figures": figures, "baseline": baseline, "ratio": ratio},
            indent=2,
            default=str,
        )
    )
    return out
