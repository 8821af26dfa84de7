"""Fast paths: each option against expkit's defaults, for speed and for accuracy.

    python bench/fast_paths.py [--steps 150] [--repeats 1]

MiniLM on SST-2 (length 64, batch 32, lr 1e-4, warmup 10 %), the acceptance run of the tutorial.
Speed is `train_samples_per_second`; accuracy is test accuracy (the 872 GLUE validation rows)
after the same number of steps. On a CPU, fp16 and fused/foreach optimizers on CUDA do not
apply; the GPU options are listed for the GPU run.
"""

from __future__ import annotations

import argparse

from harness import DATA, alternate, expkit, median, prepare_store, table, workdir

OPTIONS = {
    "defaults": [],
    "data.group_by_length=true": ["data.group_by_length=true"],
    "trainer.precision=bf16": ["trainer.precision=bf16"],
    "model.attn_implementation=eager": ["model.attn_implementation=eager"],
    "trainer.compile=true": ["trainer.compile=true"],
    "optimizer.fused=false": ["optimizer.fused=false"],  # fused is the default
    "group_by_length + bf16": ["data.group_by_length=true", "trainer.precision=bf16"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backend", default="manual", choices=["manual", "hf"])
    parser.add_argument("--only", nargs="*", help="option names to run (default: all)")
    args = parser.parse_args()
    sst2 = DATA / "sst2"
    work = workdir("fast-paths")
    prepare_store(work)
    config = ["data=sst2", f"data.path={sst2}", "data.max_train_samples=8000",
              "data.max_eval_samples=872", f"trainer.max_steps={args.steps}",
              f"trainer.eval_every={args.steps}", "trainer.batch_size=32", "optimizer.lr=1e-4",
              "scheduler.warmup_ratio=0.1", "trainer.save_model=false",
              "trainer.progress=false", f"trainer={args.backend}"]  # fmt: skip
    chosen = {k: v for k, v in OPTIONS.items() if not args.only or k in args.only}
    count = {"n": 0}

    def run(extra: list[str]) -> tuple[float, float]:
        count["n"] += 1
        _, metrics = expkit([*config, *extra], work, f"runs/r{count['n']}")
        return metrics["train_samples_per_second"], metrics["test_accuracy"]

    results = alternate({k: (lambda e=v: run(e)) for k, v in chosen.items()}, args.repeats)
    base_speed = median([s for s, _ in results["defaults"]])
    base_acc = median([a for _, a in results["defaults"]])
    rows = []
    for name in chosen:
        speed = median([s for s, _ in results[name]])
        acc = median([a for _, a in results[name]])
        rows.append([
            name, f"{speed:.1f} samples/s, test acc {acc:.4f}",
            f"{base_speed:.1f} samples/s, test acc {base_acc:.4f}",
            f"speed {speed / base_speed:.2f}x, acc {acc - base_acc:+.4f}", "", "",
        ])  # fmt: skip
    table(
        f"Fast paths ({args.backend} backend): MiniLM, SST-2, {args.steps} steps, median of "
        f"{args.repeats}",
        rows,
    )


if __name__ == "__main__":
    main()
