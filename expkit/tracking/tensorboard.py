"""TensorBoardSink: a tracker that also writes every metric to TensorBoard event files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from expkit.tracking import Tracker


class TensorBoardSink:
    """A second sink: every metric the wrapped tracker gets also goes to TensorBoard.

    Event files go to `log_dir` (the run dir's `tensorboard/`), under the metric names and steps
    the tracker records, so both backends write the same tags.
    """

    def __init__(self, inner: Tracker, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.inner = inner
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    @property
    def run_id(self) -> str | None:
        return self.inner.run_id

    @property
    def spill_path(self) -> Path | None:
        return self.inner.spill_path

    @spill_path.setter
    def spill_path(self, path: Path | None) -> None:
        self.inner.spill_path = path

    def open(self) -> None:
        self.inner.open()

    def start(self, run_name: str | None, tags: dict[str, str]) -> None:
        self.inner.start(run_name, tags)

    def resume(self, run_id: str | None, tags: dict[str, str], step: int) -> None:
        """Events past `step` (written before a kill) are purged: each step shows once."""
        from torch.utils.tensorboard import SummaryWriter

        self.inner.resume(run_id, tags, step)
        self.writer.close()
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=step + 1)

    def log_params(self, params: dict[str, object]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        for name, value in metrics.items():
            self.writer.add_scalar(name, float(value), int(step))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.inner.set_tags(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.inner.log_artifact(path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.inner.log_text(text, artifact_file)

    def log_model(self, model_dir: Path, info: dict, step: int) -> None:
        self.inner.log_model(model_dir, info, step)

    def log_datasets(self, datasets: list[dict[str, object]]) -> None:
        self.inner.log_datasets(datasets)

    def flush(self) -> None:
        self.writer.flush()
        self.inner.flush()

    def try_flush(self) -> None:
        self.writer.flush()
        self.inner.try_flush()

    def close_orphans(self, run_dir: str) -> None:
        self.inner.close_orphans(run_dir)

    def end(self, status: str = "FINISHED") -> None:
        try:
            self.writer.close()
        finally:
            self.inner.end(status)
