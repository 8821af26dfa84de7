"""Bad input stops at the door: one line naming the problem, exit 2, no traceback, no run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def good_data(tmp_path):
    d = tmp_path / "data"
    _write(d / "train.tsv", "text\tlabel\na fine film\t1\na dull film\t0\n")
    _write(d / "dev.tsv", "text\tlabel\ngreat\t1\nbad\t0\n")
    return d


def _assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("expkit:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def _assert_no_run_recorded(workdir: Path) -> None:
    db = workdir / "runs" / "mlflow.db"
    if db.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exps = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(exps)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["optimizer=adamx"], ["unknown option 'adamx'", "adamw, sgd"]),
        (["optimizer.lrr=1"], ["unknown config key 'optimizer.lrr'", "lr"]),
        (["optimizer.lr=abc"], ["optimizer.lr", "'abc'"]),
        (["optimizer.lr=-1e-5"], ["optimizer.lr=-1e-05 must be positive"]),
        (["trainer.batch_size=0"], ["trainer.batch_size=0 must be at least 1"]),
        (
            ["data=local", "data.path=/no/such/dir"],
            ["data directory '/no/such/dir' does not exist"],
        ),
        (
            ["model.name_or_path=/no/such/model"],
            ["model directory '/no/such/model' does not exist"],
        ),
        (["data.max_length=100000"], ["data.max_length=100000 is beyond the model's"]),
        (["freeze=bottom_layers", "freeze.num_layers=9"], ["freeze.num_layers=9 is beyond"]),
        (["data=local"], ["data.path is required for data=local"]),
        (["model.name_or_path=???"], ["model.name_or_path is required"]),
        (
            ["trainer.epochs=0.01", "scheduler.warmup_ratio=0.5"],
            [
                "scheduler.warmup_ratio=0.5 gives 1 warmup steps, not shorter than training",
                "trainer.epochs=0.01 over 320 examples",
            ],
        ),
        (
            ["trainer.max_steps=5", "scheduler.warmup_ratio=0.9"],
            ["scheduler.warmup_ratio=0.9 gives 5 warmup steps", "(5 steps: trainer.max_steps=5)"],
        ),
        (["trainer.precision=fp8"], ["trainer.precision='fp8' is not valid", "bf16"]),
    ],
)
def test_config_errors(tmp_path, args, needles):
    proc = run_cli("model=tiny", *args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)


@pytest.mark.parametrize(
    ("files", "args", "needles"),
    [
        ({}, ["data.text_fields=[sentence]"], ["has no text column 'sentence'", "text, label"]),
        ({}, ["data.label_field=topic"], ["has no label column 'topic'"]),
        (
            {"dev.tsv": "text\tlabel\nfine\t1\nodd\t7\n"},
            ["data.label_names=[neg,pos]"],
            ["dev.tsv: data row 2: label '7' is not in the label set (neg, pos)"],
        ),
        (
            {"train.tsv": "text\tlabel\nfine\t1\nbad\t0\textra\n"},
            [],
            ["train.tsv:3", "expected 2 fields"],
        ),
        ({"train.tsv": ""}, [], ["train.tsv", "no data rows"]),
        (
            {},
            ["loss=cross_entropy", "loss.class_weights=[1,2,3]"],
            ["loss.class_weights has 3 values but the data has 2 labels (0, 1)"],
        ),
        ({"train.tsv": "text\tlabel\n"}, [], ["train.tsv", "no data rows"]),
    ],
)
def test_data_errors(tmp_path, good_data, files, args, needles):
    for name, text in files.items():
        _write(good_data / name, text)
    proc = run_cli("model=tiny", "data=local", f"data.path={good_data}", *args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["trainer.device=cuda"], ["trainer.device=cuda but no CUDA device is available"]),
        (["trainer.precision=fp16"], ["trainer.precision=fp16 needs a CUDA device"]),
    ],
)
def test_device_errors_stop_before_a_run_opens(tmp_path, args, needles):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    proc = run_cli("model=tiny", *args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)
