"""Stopping between steps: the first SIGTERM or Ctrl-C lets the current step finish and the
backend save a checkpoint; a second one stops at once."""

from __future__ import annotations

import logging
import signal
from typing import Any

from expkit.errors import Terminated

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interruption(signum: int) -> KeyboardInterrupt:
    """What a signal raises: KeyboardInterrupt for Ctrl-C, Terminated (one) for SIGTERM."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


class GracefulStop:
    """While active (a `with` block in the main thread), a signal only sets `signum`.

    The training loop asks `requested` after each step, saves a checkpoint and calls `stop()`.
    Outside the block (loading, final evaluation) signals act at once, as before.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second one: stop now
            raise interruption(signum)
        self.signum = signum
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        log.warning(
            "%s: finishing this step and saving a checkpoint (%s again stops at once)",
            signal.Signals(signum).name, again,
        )  # fmt: skip

    def stop(self) -> None:
        """Raise what the signal would have raised (the run ends KILLED); SIGTERM's when another
        process of the run got the signal and this one did not."""
        raise interruption(self.signum if self.signum is not None else signal.SIGTERM)

    def __enter__(self) -> GracefulStop:
        try:
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
