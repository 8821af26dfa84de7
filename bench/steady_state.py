"""Steady state over a long run: 3,000 tiny steps, every one logged to MLflow.

    python bench/steady_state.py [--steps 3000]

The last 10 % of the steps must run as fast as the first 10 % (nothing accumulates per step:
buffers, history, graphs), and the resident memory must not grow by 50 MB or more between the end
of the first 10 % and the end. Step times come from the MLflow timestamps of each step's `loss`;
memory is sampled from /proc every 0.2 s.
"""

from __future__ import annotations

import argparse
import bisect
import subprocess
import sys
import time
from pathlib import Path

from harness import DATA, ENV, metric_history, prepare_store, table, verdict, workdir


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    work = workdir("steady")
    prepare_store(work)
    cmd = [sys.executable, "-m", "expkit", "model=tiny", "data=sst2",
           f"data.path={DATA / 'sst2'}", "data.max_train_samples=20000",
           "data.max_eval_samples=64", f"trainer.max_steps={args.steps}",
           f"trainer.eval_every={args.steps}", "trainer.batch_size=32", "trainer.log_every=1",
           "trainer.save_model=false", "trainer.progress=false",
           "hydra.run.dir=runs/long"]  # fmt: skip
    errors = open(work / "stderr.txt", "w+")  # noqa: SIM115 (read back after the run)
    proc = subprocess.Popen(cmd, cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=errors)
    samples: list[tuple[float, float]] = []  # (time in ms, RSS in MB)
    while proc.poll() is None:
        rss = _rss_mb(proc.pid)
        if rss is not None:
            samples.append((time.time() * 1000, rss))
        time.sleep(0.2)
    if proc.returncode != 0:
        errors.seek(0)
        raise RuntimeError(errors.read()[-3000:])
    history = sorted(metric_history(work, "runs/long", "loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, args.steps + 1))
    tenth = args.steps // 10
    stamp = [m.timestamp for m in history]
    first = (tenth - 1) / (stamp[tenth - 1] - stamp[0]) * 1000  # steps/s over steps 1..tenth
    last = (tenth - 1) / (stamp[-1] - stamp[-tenth]) * 1000
    times = [t for t, _ in samples]
    at = bisect.bisect_left(times, stamp[tenth - 1])
    rss_early = samples[min(at, len(samples) - 1)][1]
    rss_late = max(r for t, r in samples if stamp[-tenth] <= t <= stamp[-1] + 1000)
    growth = rss_late - rss_early
    table(
        f"Steady state: tiny model, {args.steps} steps, log_every=1 (MLflow)",
        [
            ["speed, last 10 % of steps", f"{last:.1f} steps/s",
             f"{first:.1f} steps/s (first 10 %)", f"{last / first:.3f}", ">= 0.95",
             verdict(last / first >= 0.95)],
            ["resident memory growth, after the first 10 % to the end", f"{growth:+.1f} MB",
             f"{rss_early:.0f} MB at step {tenth}", "", "< 50 MB", verdict(growth < 50)],
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
