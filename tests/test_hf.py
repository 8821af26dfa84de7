"""trainer=hf: the Trainer on the shared builders, step for step equal to the manual loop."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch

from expkit.backends import get_backend
from expkit.backends.hf import check, training_arguments
from expkit.config.validate import validate
from expkit.errors import ConfigError
from tests.conftest import run_cli

CPU = torch.device("cpu")


def _write_sentiment(folder: Path) -> Path:
    """A two-class CSV set the tiny model learns within 30 steps (one cue word per sentence)."""
    rng = random.Random(0)
    pos = ["good", "great", "lovely", "bright", "fine"]
    neg = ["bad", "awful", "poor", "dull", "grim"]
    filler = ["the", "film", "was", "a", "plot", "and", "very", "story", "acting", "quite"]
    folder.mkdir(parents=True)
    for split, n in (("train", 200), ("dev", 60), ("test", 60)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["text", "label"])
            writer.writeheader()
            for i in range(n):
                words = [rng.choice(filler) for _ in range(rng.randint(3, 9))]
                words.insert(rng.randrange(len(words)), rng.choice(pos if i % 2 else neg))
                writer.writerow({"text": " ".join(words), "label": "pos" if i % 2 else "neg"})
    return folder


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """The same 30-step config run by `expkit trainer=manual` and `expkit trainer=hf`.

    200 examples in micro-batches of 8, two per step: 13 steps per epoch, the last of one
    micro-batch, so accumulation meets two epoch ends; dropout is on (the model's 0.1).
    """
    workdir = tmp_path_factory.mktemp("parity")
    data = _write_sentiment(workdir / "data")
    common = [
        "model=tiny", "data=local", f"data.path={data}", "trainer.max_steps=30",
        "trainer.batch_size=8", "trainer.grad_accum_steps=2", "trainer.log_every=1",
        "trainer.eval_every=10", "optimizer.lr=1e-2", "tracking.tensorboard=true",
    ]  # fmt: skip
    for backend in ("manual", "hf"):
        proc = run_cli(*common, f"trainer={backend}", f"hydra.run.dir=runs/{backend}", cwd=workdir)
        assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/runs/mlflow.db")
    exp = client.get_experiment_by_name("expkit")
    runs = {r.data.tags["expkit.backend"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"manual", "hf"}
    return workdir, client, runs


def _history(client, run, name):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


@pytest.mark.slow
def test_per_step_losses_and_eval_accuracy_agree(parity_runs):
    _, client, runs = parity_runs
    manual, hf = runs["manual"], runs["hf"]
    for name in ("loss", "grad_norm", "learning_rate"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == list(range(1, 31)), name
        assert [s for s, _ in b] == [s for s, _ in a], name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
    accuracy = _history(client, manual, "eval_accuracy")
    assert [s for s, _ in accuracy] == [10, 20, 30]
    assert _history(client, hf, "eval_accuracy") == accuracy  # identical, not merely close
    assert max(v for _, v in accuracy) > 0.8  # it learned: the comparison is not of chance
    for name in ("eval_loss", "test_loss", "test_accuracy", "test_f1"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in b] == [s for s, _ in a]
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name


@pytest.mark.slow
def test_runs_differ_only_in_the_backend_and_timings(parity_runs):
    _, client, runs = parity_runs
    manual, hf = runs["manual"], runs["hf"]
    assert manual.info.status == hf.info.status == "FINISHED"
    a, b = manual.data.params, hf.data.params
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"trainer.backend"}
    assert set(manual.data.metrics) == set(hf.data.metrics)
    timings = {"train_runtime", "train_samples_per_second"}
    for name in set(manual.data.metrics) - timings:
        assert hf.data.metrics[name] == pytest.approx(manual.data.metrics[name], abs=1e-4), name
    assert hf.data.metrics["train_samples_per_second"] > 0
    top = {
        r.info.run_id: {x.path for x in client.list_artifacts(r.info.run_id)} for r in (manual, hf)
    }
    assert top[manual.info.run_id] == top[hf.info.run_id]
    assert {"config.yaml", "overrides.yaml", "metrics.json", "expkit.log"} <= top[hf.info.run_id]
    (output,) = client.get_run(hf.info.run_id).outputs.model_outputs  # runs:/RUN_ID/model
    model_files = {
        x.path for x in client.list_logged_model_artifacts(output.model_id, "data/model")
    }
    assert {"data/model/model.safetensors", "data/model/config.json"} <= model_files


@pytest.mark.slow
def test_the_trainer_leaves_nothing_of_its_own(parity_runs):
    workdir, _, _ = parity_runs
    assert sorted(p.name for p in workdir.iterdir()) == [
        "data",
        "runs",
    ]  # no mlruns/, no tmp_trainer/

    def files(run_dir: Path) -> set[str]:
        # event file names carry a time and a host name
        return {
            "tensorboard/<events>"
            if p.parent.name == "tensorboard"
            else str(p.relative_to(run_dir))
            for p in run_dir.rglob("*")
            if p.is_file()
        }

    manual, hf = files(workdir / "runs" / "manual"), files(workdir / "runs" / "hf")
    assert hf == manual
    assert not any("checkpoint" in f or f.startswith("hf_trainer") for f in hf)


@pytest.mark.slow
def test_tensorboard_events_have_the_same_tags_and_values(parity_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir, _, _ = parity_runs
    scalars = {}
    for backend in ("manual", "hf"):
        acc = EventAccumulator(str(workdir / "runs" / backend / "tensorboard"))
        acc.Reload()
        scalars[backend] = {
            tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
        }
    assert set(scalars["hf"]) == set(scalars["manual"])
    assert {"loss", "learning_rate", "grad_norm", "eval_accuracy", "test_f1"} <= set(scalars["hf"])
    a, b = scalars["manual"]["loss"], scalars["hf"]["loss"]
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 31))
    assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4)


OPTIONS = [
    pytest.param(["freeze=base_model"], id="freeze-encoder"),
    pytest.param(["freeze=embeddings"], id="freeze-embeddings"),
    pytest.param(["freeze=bottom_layers", "freeze.num_layers=1"], id="freeze-bottom-layer"),
    pytest.param(
        ["loss=cross_entropy", "loss.class_weights=[1.0,3.0]", "loss.label_smoothing=0.1"],
        id="weighted-smoothed-cross-entropy",
    ),
    pytest.param(["model.dropout=0.1", "trainer.precision=bf16"], id="bf16-dropout"),
    pytest.param(
        [
            "optimizer=sgd",
            "optimizer.momentum=0.9",
            "scheduler=cosine",
            "scheduler.warmup_steps=2",
            "trainer.max_grad_norm=null",
        ],
        id="sgd-cosine-no-clipping",
    ),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_every_option_trains_the_same_in_both_backends(make_job, options):
    """48 examples, batch 5 x 2: 5 steps per epoch, the last of one micro-batch; 8 steps."""
    common = ["trainer.batch_size=5", "trainer.grad_accum_steps=2", "trainer.log_every=1",
              "trainer.eval_every=4", "optimizer.lr=3e-3", *options]  # fmt: skip
    results = {}
    for backend in ("manual", "hf"):
        job, rec = make_job(8, f"trainer={backend}", *common)
        before = {n: p.detach().clone() for n, p in job.model.named_parameters()}
        final = get_backend(backend)(job)
        moved = {n for n, p in job.model.named_parameters() if not torch.equal(before[n], p)}
        results[backend] = (rec, final, moved)
    (rec_m, final_m, moved_m), (rec_h, final_h, moved_h) = results["manual"], results["hf"]
    assert [s for s, _ in rec_h.series("loss")] == list(range(1, 9))
    losses_m = [v for _, v in rec_m.series("loss")]
    assert [v for _, v in rec_h.series("loss")] == pytest.approx(losses_m, abs=1e-4)
    assert rec_h.series("eval_accuracy") == rec_m.series("eval_accuracy")
    assert [s for s, _ in rec_h.series("eval_loss")] == [4, 8]
    assert moved_h == moved_m
    if "freeze=base_model" in options:
        assert moved_h == {"classifier.weight", "classifier.bias"}
    assert final_h.keys() == final_m.keys()


def test_training_arguments_come_from_the_run_config(make_cfg, tmp_path):
    cfg = make_cfg(
        "trainer=hf", "trainer.max_steps=7", "trainer.batch_size=4", "trainer.eval_batch_size=9",
        "trainer.grad_accum_steps=3", "trainer.max_grad_norm=0.5", "trainer.log_every=2",
        "trainer.eval_every=5", "trainer.precision=bf16", "seed=7", "optimizer.lr=2e-4",
        "optimizer.weight_decay=0.01", "trainer.hf_args.dataloader_pin_memory=false",
    )  # fmt: skip
    args = training_arguments(cfg, tmp_path / "run" / "hf_trainer", CPU, has_dev=True)
    assert Path(args.output_dir) == tmp_path / "run" / "hf_trainer"
    assert (args.max_steps, args.per_device_train_batch_size, args.per_device_eval_batch_size) == (
        7, 4, 9,
    )  # fmt: skip
    assert (args.gradient_accumulation_steps, args.max_grad_norm) == (3, 0.5)
    assert (args.logging_steps, args.eval_strategy, args.eval_steps) == (2, "steps", 5)
    assert args.bf16 and not args.fp16 and args.use_cpu and args.seed == 7
    assert (args.learning_rate, args.weight_decay) == (2e-4, 0.01)
    assert args.report_to == [] and args.save_strategy == "no"
    assert args.dataloader_pin_memory is False  # the user's pass-through reached the Trainer
    per_epoch = training_arguments(make_cfg("trainer=hf"), tmp_path, CPU, has_dev=True)
    assert (per_epoch.eval_strategy, per_epoch.num_train_epochs, per_epoch.max_steps) == (
        "epoch", 3.0, -1,
    )  # fmt: skip
    assert (
        training_arguments(make_cfg("trainer=hf"), tmp_path, CPU, has_dev=False).eval_strategy
        == "no"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.hf_args.logging_frist_step=true", "(did you mean logging_first_step"),
        ("trainer.hf_args.per_device_train_batch_size=4", "set by expkit from trainer.batch_size"),
        ("trainer.hf_args.report_to=[mlflow]", "expkit's tracker is the only writer"),
        ("trainer.hf_args.logging_first_step=tru", "logging_first_step='tru' must be bool"),
        ("trainer.hf_args.torch_empty_cache_steps=1.5", "must be int or null"),
        ("trainer.hf_args.dataloader_prefetch_factor=2", "--dataloader_prefetch_factor can only"),
        ("trainer.hf_args.load_best_model_at_end=true", "set by expkit from trainer.load_best"),
    ],
)  # fmt: skip
def test_hf_args_are_checked_against_training_arguments(make_cfg, override, message):
    cfg = make_cfg("trainer=hf", override)
    with pytest.raises(ConfigError) as err:
        check(cfg, CPU)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_hf_args_belong_to_the_hf_backend(make_cfg):
    with pytest.raises(ConfigError, match="only applies to trainer=hf, not trainer=manual"):
        validate(make_cfg("trainer.hf_args.logging_first_step=true"))
    check(make_cfg("trainer=hf", "trainer.hf_args.logging_first_step=true"), CPU)  # accepted


@pytest.mark.slow
def test_a_bad_hf_arg_stops_before_the_run_opens(tmp_path):
    proc = run_cli("model=tiny", "trainer=hf", "trainer.hf_args.bogus_flag=1", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "expkit: error: trainer.hf_args.bogus_flag is not a TrainingArguments field; see "
        "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"
    ]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    exp = client.get_experiment_by_name("expkit")
    assert exp is None or not client.search_runs([exp.experiment_id])
    # nothing half-written: Hydra's own .hydra/ record, but not expkit's config and overrides
    written = [p for p in (tmp_path / "runs").rglob("*.yaml") if p.parent.name != ".hydra"]
    assert not written
