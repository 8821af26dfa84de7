"""Training throughput and peak memory: expkit (both backends) against the tutorial's plain loop.

    python bench/throughput.py [--repeats 3]

The same SST-2 rows, tokenizer, model, batch size, optimizer and step count; expkit with its
defaults (MLflow on, log every 10 steps, clipping at 1.0). Each variant runs in its own process,
alternating; the table gives the median `train_samples_per_second` (the training loop alone, as
expkit reports it) and the peak resident memory of the whole process.
"""

from __future__ import annotations

import argparse

from harness import DATA, alternate, expkit, median, plain, prepare_store, table, verdict, workdir

CASES = {  # model: (steps, training rows) -- the tiny model's steps are short, as on a GPU
    "minilm": (30, 2000),
    "tiny": (300, 8000),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    sst2 = DATA / "sst2"
    speed_rows, memory_rows = [], []
    for model in args.models:
        steps, rows = CASES[model]
        work = workdir(f"throughput-{model}")
        prepare_store(work)
        common = ["--model", model, "--data", str(sst2), "--train-samples", str(rows),
                  "--max-length", "64", "--batch-size", "32", "--steps", str(steps),
                  "--lr", "1e-4"]  # fmt: skip
        config = [f"model={model}", "data=sst2", f"data.path={sst2}",
                  f"data.max_train_samples={rows}", "data.max_length=64",
                  "data.max_eval_samples=64", f"trainer.max_steps={steps}",
                  "trainer.batch_size=32", "optimizer.lr=1e-4", "trainer.save_model=false",
                  "trainer.progress=false"]  # fmt: skip
        runs = {"n": 0}

        def run_expkit(backend: str, config=config, work=work, runs=runs):
            runs["n"] += 1
            result, metrics = expkit([*config, f"trainer={backend}"], work, f"runs/r{runs['n']}")
            return metrics["train_samples_per_second"], result.peak_rss_mb

        def run_plain(common=common, work=work):
            result, out = plain(common, work)
            return out["train_samples_per_second"], result.peak_rss_mb

        results = alternate(
            {"plain loop": run_plain, "expkit manual": lambda: run_expkit("manual"),
             "expkit hf": lambda: run_expkit("hf")},
            args.repeats,
        )  # fmt: skip
        base_speed = median([s for s, _ in results["plain loop"]])
        base_rss = median([m for _, m in results["plain loop"]])
        for name in ("expkit manual", "expkit hf"):
            speed = median([s for s, _ in results[name]])
            rss = median([m for _, m in results[name]])
            speed_rows.append([
                f"{name}, {model} ({steps} steps)", f"{speed:.1f} samples/s",
                f"{base_speed:.1f} samples/s", f"{speed / base_speed:.3f}", ">= 0.97",
                verdict(speed / base_speed >= 0.97),
            ])  # fmt: skip
            target = model == "minilm"  # the target is for MiniLM; the tiny model's, to see
            memory_rows.append([
                f"{name}, {model}", f"{rss:.0f} MB", f"{base_rss:.0f} MB",
                f"{rss / base_rss:.3f}", "<= 1.1" if target else "(none)",
                verdict(rss / base_rss <= 1.1) if target else "",
            ])  # fmt: skip
    table(
        f"Training throughput: median of {args.repeats} alternated runs (SST-2, length 64, "
        "batch 32)",
        speed_rows,
    )
    table(
        "Peak resident memory of the training process (median; MLflow's writer process, about "
        "230 MB, is not in it)",
        memory_rows,
    )


if __name__ == "__main__":
    main()
