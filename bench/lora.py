"""LoRA against full fine-tuning: step time, peak memory and checkpoint size, side by side.

`expkit adapter=none` and `expkit adapter=lora` on SST-2 with MiniLM (batch 32, length 64),
alternated; each run's training throughput (its metrics.json), its peak resident memory (the
kernel's accounting of that process) and the size of its checkpoint's weights.

    python bench/lora.py [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness


def _weights_mb(checkpoint: Path) -> float:
    files = [checkpoint / "model.safetensors", checkpoint / "adapter_model.safetensors"]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    workdir = harness.workdir("lora")
    harness.prepare_store(workdir)
    common = [
        "data=sst2", f"data.path={harness.DATA / 'sst2'}", f"trainer.max_steps={args.steps}",
        "trainer.batch_size=32", "data.max_length=64", "data.max_eval_samples=64",
        f"trainer.save_every={max(1, args.steps // 2)}", "trainer.progress=false",
    ]  # fmt: skip
    lr = {"none": "1e-4", "lora": "5e-4"}
    count = {"none": 0, "lora": 0}

    def variant(name: str):
        def go() -> dict[str, float]:
            count[name] += 1
            run_dir = f"runs/{name}_{count[name]}"
            result, metrics = harness.expkit(
                [*common, f"adapter={name}", f"optimizer.lr={lr[name]}"], workdir, run_dir
            )
            # the mid-run checkpoint (a finished run keeps its checkpoints as they were)
            checkpoint = workdir / run_dir / "checkpoints" / f"step_{max(1, args.steps // 2)}"
            return {
                "samples_per_s": metrics["train_samples_per_second"],
                "peak_rss_mb": result.peak_rss_mb,
                "weights_mb": _weights_mb(checkpoint),
            }

        return go

    results = harness.alternate({n: variant(n) for n in ("none", "lora")}, args.repeats)
    med = {n: {k: harness.median([r[k] for r in rs]) for k in rs[0]} for n, rs in results.items()}
    full, lora = med["none"], med["lora"]
    step_ratio = full["samples_per_s"] / lora["samples_per_s"]  # LoRA's step time / full's
    rows = [
        ["step time, LoRA / full", f"{lora['samples_per_s']:.1f} samples/s",
         f"{full['samples_per_s']:.1f} samples/s", f"{step_ratio:.3f}", "measured", "-"],
        ["peak memory, LoRA / full", f"{lora['peak_rss_mb']:.0f} MB",
         f"{full['peak_rss_mb']:.0f} MB", f"{lora['peak_rss_mb'] / full['peak_rss_mb']:.3f}",
         "measured", "-"],
        ["checkpoint weights, LoRA / full", f"{lora['weights_mb']:.2f} MB",
         f"{full['weights_mb']:.2f} MB", f"{lora['weights_mb'] / full['weights_mb']:.4f}",
         "< 0.05", harness.verdict(lora["weights_mb"] < 0.05 * full["weights_mb"])],
    ]  # fmt: skip
    harness.table(
        f"LoRA (r 8) vs full fine-tuning, MiniLM, SST-2, {args.steps} steps of 32, length 64, "
        f"medians of {args.repeats}",
        rows,
    )


if __name__ == "__main__":
    main()
