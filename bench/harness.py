"""What the benchmarks share: run commands side by side, alternating, and print ratio tables.

These machines are shared and noisy, so every benchmark measures its variants in one process,
interleaved (A B C, B C A, ...), and reports medians and ratios, never absolute limits.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EXPKIT_BENCH_DATA", ROOT.parent / "shared" / "data"))
PLAIN = ROOT / "bench" / "plain_loop.py"
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


@dataclass
class Result:
    """One finished command: output, wall time, peak resident memory (its own, from wait4)."""

    stdout: str
    stderr: str
    wall: float
    peak_rss_mb: float
    started_at: float  # time.time() just before it was started


def run(cmd: list[str], cwd: Path) -> Result:
    """Run `cmd` to its end; its peak RSS comes from the kernel's accounting of that child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started_at, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return Result(stdout, stderr, wall, usage.ru_maxrss / 1024, started_at)


def expkit(args: list[str], workdir: Path, run_dir: str) -> tuple[Result, dict[str, Any]]:
    """`expkit <args>` launched in `workdir`; (the result, its metrics.json)."""
    result = run([sys.executable, "-m", "expkit", *args, f"hydra.run.dir={run_dir}"], workdir)
    metrics = json.loads((workdir / run_dir / "metrics.json").read_text())
    return result, metrics


def plain(args: list[str], workdir: Path) -> tuple[Result, dict[str, Any]]:
    """The tutorial's loop (bench/plain_loop.py); (the result, the JSON it printed)."""
    result = run([sys.executable, str(PLAIN), *args], workdir)
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def prepare_store(workdir: Path) -> str:
    """An MLflow store that exists already (its one-time schema setup is not what is timed)."""
    from expkit.tracking import MLflowTracker

    uri = f"sqlite:///{workdir}/runs/mlflow.db"
    (workdir / "runs").mkdir(parents=True, exist_ok=True)
    MLflowTracker(uri, "expkit")
    return uri


def metric_history(workdir: Path, run_dir: str, key: str) -> list[Any]:
    """A metric's history (value, step, timestamp in ms) of the run in `run_dir`."""
    from mlflow.tracking import MlflowClient

    pointer = json.loads((workdir / run_dir / "mlflow_run.json").read_text())
    client = MlflowClient(pointer["tracking_uri"])
    return client.get_metric_history(pointer["run_id"], key)


def alternate(variants: dict[str, Any], repeats: int) -> dict[str, list[Any]]:
    """Call each variant `repeats` times, interleaved and rotated: {name: [results]}."""
    names = list(variants)
    results: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            results[name].append(variants[name]())
            print(f"  repeat {r + 1}/{repeats}: {name} done", file=sys.stderr, flush=True)
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = platform.processor() or "?"
    with_model = Path("/proc/cpuinfo")
    if with_model.is_file():
        for line in with_model.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def table(title: str, rows: list[list[str]]) -> None:
    """A markdown table: what, measured, baseline, ratio, target, met."""
    head = ["what", "measured", "baseline", "ratio", "target", "met"]
    print(f"\n### {title}\n\n{machine()}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def workdir(name: str) -> Path:
    """A fresh directory for one benchmark's runs (its own store and tokenized-data cache)."""
    path = Path(tempfile.mkdtemp(prefix=f"expkit-bench-{name}-"))
    return path


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"
