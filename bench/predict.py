"""`expkit predict` against `transformers.pipeline` on the same model and file, side by side.

    python bench/predict.py [--model minilm|tiny] [--steps N] [--repeats R] [--batch-size B]

Trains one expkit run (MiniLM on SST-2, N steps, length 64) to have a fine-tuned model folder,
then predicts the SST-2 test file (872 sentences) with expkit's Predictor (inference mode,
batches of B sorted by length) and with a text-classification pipeline over the same folder
(its default batch of 1, and batches of B), alternating R times. Prints examples/s, the ratio
(target: expkit >= 1.5x the default pipeline) and whether the predicted labels are the same.
"""

from __future__ import annotations

import argparse
import sys
import time

from harness import DATA, alternate, expkit, median, table, verdict, workdir


def _texts() -> tuple[list[str], list[int]]:
    lines = (DATA / "sst2" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t") for line in lines if line]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="minilm", choices=["minilm", "tiny"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="the first N test sentences only")
    args = parser.parse_args()

    where = workdir("predict")
    expkit(
        [f"model={args.model}", "data=sst2", f"data.path={DATA / 'sst2'}", "data.max_length=64",
         f"trainer.max_steps={args.steps}", "trainer.batch_size=32", "trainer.progress=false",
         "tracking=none", "data.max_eval_samples=64"],
        where, "runs/trained",
    )  # fmt: skip
    model_dir = where / "runs" / "trained" / "model"
    texts, gold = _texts()
    if args.limit:
        texts, gold = texts[: args.limit], gold[: args.limit]

    from transformers import pipeline

    from expkit.predictor import Predictor

    predictor = Predictor(model_dir, batch_size=args.batch_size)
    pipe = pipeline(
        "text-classification", model=str(model_dir), tokenizer=str(model_dir), device="cpu"
    )
    call = {"truncation": True, "max_length": 64, "top_k": None}
    outputs: dict[str, list[str]] = {}

    def timed(name: str, predict) -> float:
        start = time.perf_counter()
        labels = predict()
        seconds = time.perf_counter() - start
        outputs[name] = labels
        return len(texts) / seconds

    def ours() -> list[str]:
        return [r["label"] for r in predictor.records([texts])]

    def plain_pipe() -> list[str]:
        return [max(o, key=lambda x: x["score"])["label"] for o in pipe(texts, **call)]

    def batched_pipe() -> list[str]:
        answers = pipe(texts, batch_size=args.batch_size, **call)
        return [max(o, key=lambda x: x["score"])["label"] for o in answers]

    results = alternate(
        {
            "expkit": lambda: timed("expkit", ours),
            "pipeline": lambda: timed("pipeline", plain_pipe),
            "pipeline_batched": lambda: timed("pipeline_batched", batched_pipe),
        },
        args.repeats,
    )
    rates = {name: median(values) for name, values in results.items()}
    same = outputs["expkit"] == outputs["pipeline"] == outputs["pipeline_batched"]
    names = ["negative", "positive"]
    accuracy = sum(names[g] == p for g, p in zip(gold, outputs["expkit"], strict=True)) / len(gold)
    ratio = rates["expkit"] / rates["pipeline"]
    table(
        f"expkit predict vs transformers.pipeline: {args.model}, SST-2 test ({len(texts)} "
        f"sentences), length 64, median of {args.repeats}",
        [
            ["expkit predict, examples/s (batch of "
             f"{args.batch_size}, sorted by length)", f"{rates['expkit']:.1f}",
             f"{rates['pipeline']:.1f} (pipeline, batch 1)", f"{ratio:.2f}", ">= 1.5",
             verdict(ratio >= 1.5)],
            [f"pipeline, batch of {args.batch_size}", f"{rates['pipeline_batched']:.1f}",
             f"{rates['pipeline']:.1f}", f"{rates['pipeline_batched'] / rates['pipeline']:.2f}",
             "", ""],
            ["same labels as both pipelines", str(same), "", "", "True", verdict(same)],
            ["test accuracy of the predictions", f"{accuracy:.4f}", "", "", "", ""],
        ],
    )  # fmt: skip
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
