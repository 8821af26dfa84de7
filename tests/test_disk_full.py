"""A disk that fills up, on a real small file system (tmpfs): checkpoints and the final model are
whole or absent, the run says what was lost, and what it has is kept."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, run_cli
from tests.test_errors import _assert_one_line_error

# a tiny-model checkpoint is about 12.0 MB (model.safetensors 4.0 MB, optimizer.pt 8.0 MB) and the
# final model dir about 4.7 MB: the sizes below are chosen from these
RECIPE = [
    "model=tiny", "data=sst2", f"data.path={SHARED_DATA / 'sst2'}",
    "data.max_train_samples=200", "data.max_eval_samples=50", "trainer.progress=false",
]  # fmt: skip


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a fresh tmpfs of that size under tmp_path; every one is unmounted after."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _trained_job(make_job):
    """A tiny-model job after one optimizer step (so the optimizer has its full state)."""
    job, _ = make_job(2)
    batch = job.collator([job.datasets["train"][i] for i in range(4)])
    job.model(**batch).loss.backward()
    job.optimizer.step()
    return job


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@pytest.mark.parametrize(
    ("size", "library_error"),
    [("1m", "SafetensorError"), ("6m", "RuntimeError")],  # model.safetensors / optimizer.pt
)
def test_a_checkpoint_that_does_not_fit_is_removed_whatever_the_library_raises(
    make_job, small_disk, size, library_error
):
    from expkit.checkpoint import CheckpointNotSaved, save

    job = _trained_job(make_job)
    disk = small_disk(size)
    with pytest.raises(CheckpointNotSaved) as caught:
        save(disk, 2, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler,
             scaler=None, state={}, keep=2)  # fmt: skip
    assert type(_root_cause(caught.value)).__name__ == library_error
    assert str(caught.value).startswith("checkpoint at step 2 not saved (the disk is full")
    assert _entries(disk / "checkpoints") == []  # no partial directory left on the full disk
    assert os.statvfs(disk).f_bfree == os.statvfs(disk).f_blocks  # every byte given back


def test_the_final_model_that_does_not_fit_leaves_no_half_model(make_job, small_disk):
    from expkit.model import ModelNotSaved, save_model

    job, _ = make_job(2)
    disk = small_disk("3m")
    with pytest.raises(ModelNotSaved, match=r"not saved to .*/model \(the disk is full"):
        save_model(job.model, job.tokenizer, disk / "model")
    assert _entries(disk) == []  # neither model/ nor its hidden partial sibling


def test_the_final_model_replaces_an_earlier_one_whole(make_job, small_disk):
    from transformers import AutoModelForSequenceClassification

    from expkit.model import save_model

    job, _ = make_job(2)
    disk = small_disk("16m")
    save_model(job.model, job.tokenizer, disk / "model")
    with (disk / "model" / "config.json").open("a") as f:
        f.write(" ")  # marks the first one
    save_model(job.model, job.tokenizer, disk / "model")
    assert _entries(disk) == ["model"]
    assert not (disk / "model" / "config.json").read_text().endswith(" ")
    loaded = AutoModelForSequenceClassification.from_pretrained(disk / "model")
    assert loaded.num_labels == 2


def _run(client, run_dir: Path):
    exp = client.get_experiment_by_name("expkit")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.data.tags["expkit.run_dir"] == str(run_dir)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_a_full_disk_at_a_checkpoint_keeps_the_earlier_one_and_training_goes_on(
    tmp_path, small_disk, backend
):
    from mlflow.tracking import MlflowClient

    from expkit.checkpoint import verify

    # 20 MiB: step_2 fits, step_4 does not (its optimizer.pt hits the full disk: torch raises a
    # RuntimeError, not an OSError), and once step_4's partial files are gone the model fits
    run_dir = small_disk("20m") / "run"
    proc = run_cli(*RECIPE, f"trainer={backend}", "trainer.max_steps=5", "trainer.save_every=2",
                   "trainer.log_every=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lost = "checkpoint at step 4 not saved (the disk is full"
    assert f"[WARNING] - {lost}" in proc.stdout  # Hydra's log goes to stdout
    assert _entries(run_dir / "checkpoints") == ["step_2"]  # no partial one left
    assert verify(run_dir / "checkpoints" / "step_2")["step"] == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    run = _run(client, run_dir)
    assert run.info.status == "FINISHED"
    assert run.data.tags["expkit.checkpoint_error"].startswith(lost)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == [1, 2, 3, 4, 5]  # training went on past the failed checkpoint
    assert (run_dir / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_full_disk_at_the_final_model_fails_the_run_and_keeps_its_metrics(tmp_path, small_disk):
    from mlflow.tracking import MlflowClient

    run_dir = small_disk("3m") / "run"  # the run's records fit, model.safetensors (4 MB) does not
    proc = run_cli(*RECIPE, "trainer.max_steps=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    run = _run(client, run_dir)
    _assert_one_line_error(
        proc,
        f"the trained model was not saved to {run_dir / 'model'} (the disk is full",
        f"its metrics are kept in {run_dir / 'metrics.json'} and MLflow run {run.info.run_id}",
    )
    assert not (run_dir / "model").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".model")]
    assert run.info.status == "FAILED"
    assert run.data.tags["expkit.error"].startswith("ModelNotSaved: the trained model was not")
    # every final metric reached both records, with the same values
    written = json.loads((run_dir / "metrics.json").read_text())
    assert {"eval_accuracy", "test_accuracy", "test_loss", "train_runtime"} <= set(written)
    assert {k: run.data.metrics[k] for k in written} == pytest.approx(written)
    assert "test_accuracy" in proc.stdout  # the summary table was printed before the save


def test_a_text_record_that_does_not_fit_leaves_the_old_one_whole(small_disk):
    from expkit.checkpoint import WriteFailed, write_text_atomic

    disk = small_disk("64k")
    record = disk / "metrics.json"
    write_text_atomic(record, '{"eval_accuracy": 0.5}')
    with pytest.raises(WriteFailed) as caught:
        write_text_atomic(record, "x" * 200_000)
    assert caught.value.reason.startswith("the disk is full")
    assert record.read_text() == '{"eval_accuracy": 0.5}'
    assert _entries(disk) == ["metrics.json"]  # no partial file left
