"""Tracking cost: every step logged to MLflow (`trainer.log_every=1`) against `tracking=none`.

    python bench/tracking_cost.py [--repeats 5]

The tiny model (short steps, where per-step overhead shows most), 1,000 steps, alternating.
"""

from __future__ import annotations

import argparse

from harness import (
    DATA,
    alternate,
    expkit,
    median,
    metric_history,
    prepare_store,
    table,
    verdict,
    workdir,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    work = workdir("tracking")
    prepare_store(work)
    sst2 = DATA / "sst2"
    config = ["model=tiny", "data=sst2", f"data.path={sst2}", "data.max_train_samples=8000",
              "data.max_eval_samples=64", f"trainer.max_steps={args.steps}",
              "trainer.batch_size=32", "trainer.log_every=1", "trainer.save_model=false",
              "trainer.progress=false"]  # fmt: skip
    count = {"n": 0}
    logged = {}

    def run(tracking: str) -> float:
        count["n"] += 1
        run_dir = f"runs/r{count['n']}"
        _, metrics = expkit([*config, f"tracking={tracking}"], work, run_dir)
        if tracking == "mlflow":  # every step is in the store
            logged[run_dir] = len(metric_history(work, run_dir, "loss"))
        return metrics["train_samples_per_second"]

    results = alternate(
        {"tracking=none": lambda: run("none"), "tracking=mlflow": lambda: run("mlflow")},
        args.repeats,
    )
    assert all(n == args.steps for n in logged.values()), logged
    off, on = median(results["tracking=none"]), median(results["tracking=mlflow"])
    slower = 1 - on / off
    table(
        f"Tracking cost: tiny model, {args.steps} steps, log_every=1, median of {args.repeats}",
        [[
            "MLflow, every step logged", f"{on:.1f} samples/s", f"{off:.1f} samples/s (none)",
            f"{on / off:.3f} ({slower:+.1%} slower)", "<= 1 % slower", verdict(slower <= 0.01),
        ]],
    )  # fmt: skip
    print(f"\nevery run logged all {args.steps} steps to MLflow")


if __name__ == "__main__":
    main()
