"""`--help`, `--cfg job` and config errors answer without importing the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "mlflow")

PROBE = """
import sys
sys.argv = ["expkit", *{args!r}]
from expkit.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY", heavy, "CODE", code)
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["--cfg", "job"], 0),
        (["optimizer.lr=abc"], 2),
        (["optimizer=nope"], 2),
        (["trainer.batch_size=0"], 2),
    ],
)
def test_fast_paths_import_nothing_heavy(tmp_path, args, code):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert f"HEAVY [] CODE {code}" in proc.stdout, proc.stdout + proc.stderr
