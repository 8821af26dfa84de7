"""Every benchmark, one after the other, on one commit; their tables into one markdown file.

    python bench/run_all.py [--out BENCHMARKS.md]

About 45 minutes on a 2-core CPU. The file says the commit, the machine and each command.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

from harness import ROOT, machine

COMMANDS = [
    ["throughput.py"],
    ["tracking_cost.py"],
    ["startup.py"],
    ["first_step.py"],
    ["steady_state.py"],
    ["fast_paths.py"],
    ["fast_paths.py", "--backend", "hf"],
]


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", "expkit") else ""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks\n",
        f"One full run of every benchmark in `bench/` on commit {commit}{dirty}, started "
        f"{started} (`python bench/run_all.py`).\n",
        f"Machine: {machine()}. Shared and noisy: each number is a median of runs alternated "
        "in one process, read as a ratio against its baseline.\n",
    ]
    for command in COMMANDS:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / command[0]), *command[1:]],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        minutes = (time.perf_counter() - start) / 60
        line = f"`python bench/{' '.join(command)}` ({minutes:.1f} min)"
        print(line, file=sys.stderr, flush=True)
        if proc.returncode != 0:
            parts.append(f"\n## {line}\n\nfailed:\n\n```\n{proc.stderr[-3000:]}\n```\n")
            continue
        parts.append(f"\n## {line}\n{proc.stdout}")
    Path(args.out).write_text("\n".join(parts), encoding="utf-8")
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
