"""Each new task against its tutorial-plain loop, side by side in one run: accuracy and speed.

    python bench/tasks.py [--part accuracy|throughput|all] [--task NAME|all]  (regression,
    multilabel, token_classification, question_answering, masked_lm, causal_lm)

accuracy: STS-B (MiniLM, 300 steps of 32, length 128, lr 5e-5, warmup 10 %): test_pearson of
expkit within 0.02 of bench/plain_regression.py; GoEmotions (MiniLM, 300 steps of 32, length 64,
lr 3e-4, threshold 0.3): test_f1_micro within 0.02 of bench/plain_multilabel.py; CoNLL-2003
(MiniLM, 300 steps of 32, length 128, lr 5e-5, warmup 10 %): entity eval_f1 on valid within 0.01
of bench/plain_ner.py; SQuAD (MiniLM, 300 steps of 16, length 256, doc_stride 128, lr 5e-5, warmup
10 %): eval_f1 on dev within 1.0 point of bench/plain_qa.py; Tiny Shakespeare, masked (MiniLM with
a new MLM head, 300 steps of 32 blocks of 128, lr 1e-4, warmup 10 %): eval_perplexity on the dev
tail within 2 % (relative) of bench/plain_lm.py --task masked_lm, the untrained perplexity shown
beside it; Tiny Shakespeare, causal (the tiny random GPT-2 from scratch, 500 steps of 32 blocks of
128, lr 1e-3, warmup 10 %): eval_loss on the dev tail within 2 % (relative) of bench/plain_lm.py
--task causal_lm. throughput: training samples/s of expkit (both backends) against the plain loop,
40 steps each, eval on the first 64 examples only, the median of --repeats (3) alternated runs
each; target >= 0.97.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import ROOT, alternate, expkit, median, run, table, verdict, workdir

SHARED = ROOT.parent / "shared" / "data"
BENCH = Path(__file__).resolve().parent

TASKS = {
    "regression": {
        "plain": "plain_regression.py",
        "data": ["task=regression", "data=stsb", f"data.path={SHARED / 'stsb'}"],
        "settings": ["data.max_length=128", "trainer.batch_size=32", "optimizer.lr=5e-5",
                     "scheduler.warmup_ratio=0.1"],
        "plain_args": ["--data", str(SHARED / "stsb"), "--max-length", "128", "--batch-size",
                       "32", "--lr", "5e-5", "--warmup-ratio", "0.1"],
        "metric": "pearson",
    },
    "multilabel": {
        "plain": "plain_multilabel.py",
        "data": ["task=multilabel", "data=goemotions", f"data.path={SHARED / 'goemotions'}"],
        "settings": ["data.max_length=64", "trainer.batch_size=32", "optimizer.lr=3e-4",
                     "task.threshold=0.3", "scheduler.warmup_ratio=0.0", "loss=model",
                     "optimizer.head_lr=null", "task.threshold_per_label=false"],
        "plain_args": ["--data", str(SHARED / "goemotions"), "--max-length", "64",
                       "--batch-size", "32", "--lr", "3e-4", "--threshold", "0.3"],
        "metric": "f1_micro",
    },
    "token_classification": {
        "plain": "plain_ner.py",
        "data": ["task=token_classification", "data=conll2003",
                 f"data.path={SHARED / 'conll2003'}"],
        "settings": ["data.max_length=128", "trainer.batch_size=32", "optimizer.lr=5e-5",
                     "scheduler.warmup_ratio=0.1", "loss=model"],
        "plain_args": ["--data", str(SHARED / "conll2003"), "--max-length", "128",
                       "--batch-size", "32", "--lr", "5e-5", "--warmup-ratio", "0.1"],
        "metric": "f1",
        "split": "dev",  # CoNLL-2003 here has train and valid only
        "also": ["precision", "recall", "accuracy"],
    },
    "question_answering": {
        "plain": "plain_qa.py",
        "data": ["task=question_answering", "data=squad", f"data.path={SHARED / 'squad'}"],
        "settings": ["data.max_length=256", "task.doc_stride=128", "trainer.batch_size=16",
                     "optimizer.lr=5e-5", "scheduler.warmup_ratio=0.1", "loss=model"],
        "plain_args": ["--data", str(SHARED / "squad"), "--max-length", "256",
                       "--doc-stride", "128", "--batch-size", "16", "--lr", "5e-5",
                       "--warmup-ratio", "0.1"],
        "metric": "f1",
        "split": "dev",  # the shared SQuAD has train and dev only
        "also": ["exact_match"],
        "within": 1.0,  # F1 points (0-100)
    },
    "masked_lm": {
        "plain": "plain_lm.py",
        "data": ["task=masked_lm", "data=text", f"data.path={SHARED / 'tinyshakespeare'}"],
        "settings": ["data.max_length=128", "trainer.batch_size=32", "optimizer.lr=1e-4",
                     "scheduler.warmup_ratio=0.1", "loss=model"],
        "plain_args": ["--task", "masked_lm", "--data", str(SHARED / "tinyshakespeare"),
                       "--max-length", "128", "--batch-size", "32", "--lr", "1e-4",
                       "--warmup-ratio", "0.1"],
        "metric": "perplexity",
        "split": "dev",  # the tail of input.txt
        "also": ["loss", "accuracy"],
        "within": 0.02,
        "relative": True,  # |expkit - plain| / plain
        "untrained": ["perplexity"],  # the plain loop's, before training: how far it fell
    },
    "causal_lm": {
        "plain": "plain_lm.py",
        # after COMMON's model=minilm: Hydra takes the last override of a group
        "data": ["task=causal_lm", "model=tiny_gpt2", "data=text",
                 f"data.path={SHARED / 'tinyshakespeare'}"],
        "settings": ["task.block_size=128", "trainer.batch_size=32", "optimizer.lr=1e-3",
                     "scheduler.warmup_ratio=0.1", "loss=model"],
        "plain_args": ["--task", "causal_lm", "--data", str(SHARED / "tinyshakespeare"),
                       "--block-size", "128", "--batch-size", "32", "--lr", "1e-3",
                       "--warmup-ratio", "0.1"],
        "metric": "loss",
        "split": "dev",
        "also": ["perplexity", "accuracy"],
        "within": 0.02,
        "relative": True,
        "untrained": ["loss", "perplexity"],
        "steps": 500,
        "model_name": "tiny_gpt2",
    },
}  # fmt: skip
ALSO = {"regression": ["spearman"], "multilabel": ["f1_macro"]}
# the plain loops' AdamW has no weight decay (expkit's default is 0.01)
COMMON = ["model=minilm", "optimizer.weight_decay=0.0", "trainer.eval_every=0",
          "trainer.log_every=50", "trainer.progress=false", "trainer.save_model=false",
          "seed=42"]  # fmt: skip


def _plain(task: str, steps: int, extra: list[str]) -> dict:
    import json

    spec = TASKS[task]
    cmd = [sys.executable, str(BENCH / spec["plain"]), "--steps", str(steps), *spec["plain_args"]]
    result = run([*cmd, *extra], BENCH)
    return json.loads(result.stdout.strip().splitlines()[-1])


def accuracy(task: str, steps: int | None = None) -> None:
    spec = TASKS[task]
    steps = steps or spec.get("steps", 300)
    where = workdir(f"accuracy-{task}")
    base = _plain(task, steps, [])
    _, got = expkit([*COMMON, *spec["data"], *spec["settings"], f"trainer.max_steps={steps}"],
                    where, "runs/expkit")  # fmt: skip
    rows = []
    split = spec.get("split", "test")
    prefix = "eval" if split == "dev" else "test"
    within = spec.get("within", 0.01 if task == "token_classification" else 0.02)
    relative = spec.get("relative", False)
    for name in (spec["metric"], *spec.get("also", ALSO.get(task, []))):
        mine, theirs = got[f"{prefix}_{name}"], base[split][name]
        target = name == spec["metric"]
        if relative:
            off, shown = abs(mine - theirs) / theirs, f"{(mine - theirs) / theirs:+.2%}"
            goal = f"within {within:.0%} (relative)"
        else:
            off, shown, goal = abs(mine - theirs), f"{mine - theirs:+.4f}", f"within {within}"
        rows.append([f"expkit manual, {prefix}_{name}", f"{mine:.4f}", f"{theirs:.4f}", shown,
                     goal if target else "(none)",
                     verdict(off <= within) if target else ""])  # fmt: skip
    for name in spec.get("untrained", []):
        rows.append([f"untrained {split} {name} (plain loop)", "-",
                     f"{base[f'untrained_{split}'][name]:.4f}", "", "(none)", ""])  # fmt: skip
    table(f"{task}: accuracy against the plain loop ({steps} steps, {split} split)", rows)


def throughput(task: str, steps: int = 40, repeats: int = 3) -> None:
    """Median samples/s of `repeats` alternated runs of each (plain, manual, hf, then rotated):
    one run each swings by 10 % here as the shared machine's load moves."""
    spec = TASKS[task]
    where = workdir(f"throughput-{task}")
    limit = ["data.max_eval_samples=64"]
    count = iter(range(1000))

    def plain_run() -> float:
        return _plain(task, steps, ["--max-eval-samples", "64"])["train_samples_per_second"]

    def expkit_run(backend: str) -> float:
        args = [*COMMON, *spec["data"], *spec["settings"], *limit, f"trainer={backend}",
                f"trainer.max_steps={steps}"]  # fmt: skip
        return expkit(args, where, f"runs/{backend}-{next(count)}")[1]["train_samples_per_second"]

    results = alternate({"plain": plain_run, "manual": lambda: expkit_run("manual"),
                         "hf": lambda: expkit_run("hf")}, repeats)  # fmt: skip
    base = median(results["plain"])
    rows = []
    for backend in ("manual", "hf"):
        speed = median(results[backend])
        model = spec.get("model_name", "minilm")
        rows.append([f"expkit {backend}, {model} ({steps} steps)", f"{speed:.1f} samples/s",
                     f"{base:.1f} samples/s", f"{speed / base:.3f}", ">= 0.97",
                     verdict(speed / base >= 0.97)])  # fmt: skip
    table(f"{task}: training throughput against the plain loop (median of {repeats} alternated "
          f"runs each)", rows)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["accuracy", "throughput", "all"], default="all")
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3, help="alternated throughput runs")
    args = parser.parse_args()
    for task in TASKS if args.task == "all" else [args.task]:
        if args.part in ("throughput", "all"):
            throughput(task, repeats=args.repeats)
        if args.part in ("accuracy", "all"):
            accuracy(task)


if __name__ == "__main__":
    main()
