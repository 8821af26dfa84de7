"""The one exception type for errors a user can cause (bad config, bad data, missing files)."""


class ExpkitError(Exception):
    """A user-facing error: its message is one line naming what is wrong and what would be valid."""


class ConfigError(ExpkitError):
    """The run config is invalid (found before anything heavy is loaded)."""


class DataError(ExpkitError):
    """A data file is missing, empty or malformed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is so it ends like Ctrl-C does (KILLED, not RUNNING)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


class TrainingDiverged(ExpkitError):
    """The training loss became NaN or infinite: the run stops at that step, FAILED."""

    def __init__(self, step: int, loss: float, lr: float) -> None:
        super().__init__(
            f"the training loss is {loss} at step {step} (learning rate {lr:.3g}); "
            "training stopped (lower optimizer.lr, or check the data)"
        )
        self.step = step
