"""Start-up: `expkit --help`, `expkit --cfg job` and a config error, against `import hydra`.

    python bench/startup.py [--repeats 15]

None of these paths imports torch, transformers, datasets or mlflow (tests/test_startup.py
checks that through sys.modules); this measures what is left, alternating, medians.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from harness import ENV, ROOT, alternate, median, table, verdict


def _timed(cmd: list[str], expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        raise RuntimeError(f"{cmd}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("expkit")
    expkit = [exe] if exe else [sys.executable, "-m", "expkit"]
    variants = {
        "import hydra": ([sys.executable, "-c", "import hydra"], 0),
        "expkit --help": ([*expkit, "--help"], 0),
        "expkit --cfg job": ([*expkit, "--cfg", "job"], 0),
        "config error (trainer.batch_size=0)": ([*expkit, "trainer.batch_size=0"], 2),
    }
    results = alternate(
        {name: (lambda c=cmd, e=expect: _timed(c, e)) for name, (cmd, expect) in variants.items()},
        args.repeats,
    )
    base = median(results["import hydra"])
    rows = []
    for name in list(variants)[1:]:
        t = median(results[name])
        rows.append([name, f"{t:.3f} s", f"{base:.3f} s (import hydra)", f"{t / base:.2f}",
                     "<= 2.0", verdict(t / base <= 2.0)])  # fmt: skip
    table(f"Start-up: median wall time of {args.repeats} alternated runs", rows)


if __name__ == "__main__":
    main()
