"""Whether a process recorded earlier (a checkpoint writer, a run's trainer) is still there."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while `pid` exists on this host (someone else's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
