"""Each new task against its tutorial-plain loop, side by side in one run: accuracy and speed.

    python bench/tasks.py [--part accuracy|throughput|all] [--task NAME|all]  (regression,
    multilabel, token_classification, question_answering)

accuracy: STS-B (MiniLM, 300 steps of 32, length 128, lr 5e-5, warmup 10 %): test_pearson of
expkit within 0.02 of bench/plain_regression.py; GoEmotions (MiniLM, 300 steps of 32, length 64,
lr 3e-4, threshold 0.3): test_f1_micro within 0.02 of bench/plain_multilabel.py; CoNLL-2003
(MiniLM, 300 steps of 32, length 128, lr 5e-5, warmup 10 %): entity eval_f1 on valid within 0.01
of bench/plain_ner.py; SQuAD (MiniLM, 300 steps of 16, length 256, doc_stride 128, lr 5e-5, warmup
10 %): eval_f1 on dev within 1.0 point of bench/plain_qa.py. throughput:
training samples/s of expkit (both backends) against the plain loop, 40 steps each, eval on the
first 64 examples only, the median of --repeats (3) alternated runs each; target >= 0.97.
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


def accuracy(task: str, steps: int = 300) -> None:
    spec = TASKS[task]
    where = workdir(f"accuracy-{task}")
    base = _plain(task, steps, [])
    _, got = expkit([*COMMON, *spec["data"], *spec["settings"], f"trainer.max_steps={steps}"],
                    where, "runs/expkit")  # fmt: skip
    rows = []
    split = spec.get("split", "test")
    prefix = "eval" if split == "dev" else "test"
    within = spec.get("within", 0.01 if task == "token_classification" else 0.02)
    for name in (spec["metric"], *spec.get("also", ALSO.get(task, []))):
        mine, theirs = got[f"{prefix}_{name}"], base[split][name]
        target = name == spec["metric"]
        rows.append([f"expkit manual, {prefix}_{name}", f"{mine:.4f}", f"{theirs:.4f}",
                     f"{mine - theirs:+.4f}", f"within {within}" if target else "(none)",
                     verdict(abs(mine - theirs) <= within) if target else ""])  # fmt: skip
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
        rows.append([f"expkit {backend}, minilm ({steps} steps)", f"{speed:.1f} samples/s",
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
