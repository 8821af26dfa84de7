"""The quick paths (`--help`, `--cfg job`, a config error) import nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "datasets", "mlflow", "pandas", "accelerate")
PROBE = (
    "import atexit, sys\n"
    "loaded = lambda: ','.join(m for m in {heavy!r} if m in sys.modules)\n"
    "atexit.register(lambda: print('HEAVY=' + loaded()))\n"
    "sys.argv = ['expkit', *{args!r}]\n"
    "from expkit.cli import main\n"
    "main()\n"
)


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--help"], 0), (["--cfg", "job"], 0), (["model=tiny", "--cfg", "job"], 0),
     (["trainer.batch_size=0"], 2), (["optimizer=nope"], 2), (["resume=/no/such/dir"], 2)],
)  # fmt: skip
def test_quick_paths_import_nothing_heavy(args, code, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, args=args)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "HEAVY=\n" in proc.stdout, proc.stdout[-500:]
