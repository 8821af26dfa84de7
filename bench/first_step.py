"""Time to the first optimizer step: MiniLM on the whole of SST-2, from the command to step 1.

    python bench/first_step.py [--repeats 3]

Everything before the first step counts: interpreter, imports, reading and tokenizing the data
(train, dev and test: the plain loop tokenizes them too, as a script that evaluates does),
loading the model, the step itself. expkit's first run tokenizes; its second run finds the
tokenized splits in its cache (keyed by content fingerprint). The MLflow store exists already.
Each process is stopped as soon as it reports its first step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import DATA, ENV, PLAIN, alternate, median, prepare_store, table, verdict, workdir


def until_first_step(cmd: list[str], cwd: Path, marker: str) -> float:
    """Seconds from starting `cmd` to the line that reports its first optimizer step."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if marker in line:
                return time.perf_counter() - start
        raise RuntimeError(f"{cmd[:4]} ended without a first step (exit {proc.wait()})")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sst2 = DATA / "sst2"
    work = workdir("first-step")
    prepare_store(work)
    cache = work / "runs" / ".cache"
    plain_cmd = [sys.executable, str(PLAIN), "--model", "minilm", "--data", str(sst2),
                 "--train-samples", "0", "--eval-splits", "--steps", "2"]  # fmt: skip
    count = {"n": 0}

    def expkit(fresh: bool) -> float:
        if fresh:
            shutil.rmtree(cache, ignore_errors=True)
        count["n"] += 1
        cmd = [sys.executable, "-m", "expkit", "data=sst2", f"data.path={sst2}",
               "trainer.log_every=1", "trainer.progress=false", "trainer.max_steps=2",
               f"hydra.run.dir=runs/r{count['n']}"]  # fmt: skip
        return until_first_step(cmd, work, "step 1/2 loss")

    results = alternate(
        {
            "plain loop": lambda: until_first_step(plain_cmd, work, "first optimizer step done"),
            "expkit, first run": lambda: expkit(fresh=True),
            "expkit, second run": lambda: expkit(fresh=False),
        },
        args.repeats,
    )
    base = median(results["plain loop"])
    first, second = median(results["expkit, first run"]), median(results["expkit, second run"])
    table(
        f"Time to first optimizer step: MiniLM, SST-2 (60,614 / 6,735 / 872 rows), median of "
        f"{args.repeats}",
        [
            ["expkit, first run (tokenizes)", f"{first:.1f} s", f"{base:.1f} s (plain loop)",
             f"{first / base:.2f}", "<= 1.2", verdict(first / base <= 1.2)],
            ["expkit, second run (cached)", f"{second:.1f} s", f"{base:.1f} s (plain loop)",
             f"{second / base:.2f}", "< 1.0", verdict(second < base)],
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
