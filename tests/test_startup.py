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


ENTRY = (
    "import atexit, sys\n"
    "import expkit.cli as cli\n"
    "def main():\n"
    "    atexit.register(lambda: print('handler ran', flush=True))  # as torch registers its own\n"
    "    sys.stdout.write('x' * 200000)  # still in the buffer at exit\n"
    "    {end}\n"
    "cli.main = main\n"
    "cli.entry()\n"
)


@pytest.mark.parametrize(
    ("end", "code", "stderr"),
    [("return", 0, ""), ("sys.exit(2)", 2, ""), ("sys.exit(None)", 0, ""),
     ("sys.exit('expkit: no')", 1, "expkit: no"), ("raise ValueError('boom')", 1, "boom")],
)  # fmt: skip
def test_the_process_entry_exits_with_mains_status_and_loses_no_output(end, code, stderr, tmp_path):
    """`expkit` skips the interpreter's teardown (seconds of torch's modules being freed): the
    exit status is main's, the exit handlers registered while it ran still run, and what was
    written is flushed, even when stdout is a pipe."""
    proc = subprocess.run(
        [sys.executable, "-c", ENTRY.format(end=end)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr[-2000:]
    assert proc.stdout == "x" * 200000 + "handler ran\n"
    assert stderr in proc.stderr
