"""bench/gpu.py: its arithmetic (peaks, FLOPs, warm timing), its smoke run on a CPU (every row in
the table and the JSON), and the door check on model.attn_implementation=flash_attention_2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from argparse import Namespace

import pytest

from expkit.config.validate import validate
from expkit.errors import ConfigError
from tests.conftest import ROOT, SHARED_DATA, run_cli
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

sys.path.insert(0, str(ROOT / "bench"))
import gpu  # bench/ is a folder of scripts, not a package

FLASH_INSTALLED = importlib.util.find_spec("flash_attn") is not None


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA GeForce RTX 3090", None),
    ],
)
def test_peak_by_gpu_name(name, peak):
    assert gpu.peak_tflops(name) == peak


def test_flops_per_token_is_six_per_weight_plus_attention():
    # MiniLM-L6-H384 outside its embeddings, 30 tokens of context
    assert gpu.flops_per_token(10_795_394, 6, 384, 30.0) == 6 * 10_795_394 + 12 * 6 * 384 * 30


def test_model_shape_of_minilm_counts_its_weights_outside_the_embeddings():
    args = Namespace(model="minilm", data=SHARED_DATA / "sst2", steps=2, batch_size=4,
                     max_length=128)  # fmt: skip
    shape = gpu.model_shape(args)
    layer = (4 * 384 * 384 + 4 * 384) + 2 * 384 + (2 * 384 * 1536 + 1536 + 384) + 2 * 384
    pooler, head = 384 * 384 + 384, 384 * 2 + 2
    assert shape["non_embedding_parameters"] == 6 * layer + pooler + head
    assert shape["layers"] == 6 and shape["hidden"] == 384
    assert shape["parameters"] > 22_000_000  # the 30,522 x 384 word embeddings and the rest
    assert 2 < shape["mean_tokens"] <= 128


def test_warm_rate_times_the_steps_after_the_untimed_ones():
    # 10 steps in 2 s, then 20 more in 2 s: 20 steps x 8 samples / 2 s
    log = (
        "[t][expkit.backends][INFO] - step 10/30 loss 0.6959 lr 4.33e-05 5.00 steps/s\n"
        "[t][expkit.backends][INFO] - step 20/30 loss 0.6950 lr 3.50e-05 6.67 steps/s\n"
        "[t][expkit.backends][INFO] - step 30/30 loss 0.6947 lr 2.67e-05 7.50 steps/s\n"
    )
    assert gpu.warm_rate(log, 10, 8) == pytest.approx(80.0)
    assert gpu.warm_rate(log, 5, 8) is None  # no line at the untimed step
    assert gpu.warm_rate("", 10, 8) is None


def test_the_reason_of_a_failure_is_one_line():
    assert (
        gpu._reason("log\nexpkit: error: model.x is bad\nmore\n") == "expkit: error: model.x is bad"
    )
    assert gpu._reason("Traceback ...\n  File x\nImportError: no triton\n") == (
        "ImportError: no triton"
    )


def test_a_variant_past_its_time_is_stopped_with_what_it_started(tmp_path):
    # the child starts a grandchild that holds the pipes: both are ended, the call returns
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    start = time.perf_counter()
    stdout, failed = gpu._run([sys.executable, "-c", code], tmp_path, 2, tmp_path / "log")
    assert time.perf_counter() - start < 30
    assert stdout == "" and failed.startswith("stopped after 2 s")


def test_a_failed_variant_gives_its_exit_code_and_last_line(tmp_path):
    code = "import sys; print('partial'); sys.exit('RuntimeError: compile failed')"
    stdout, failed = gpu._run([sys.executable, "-c", code], tmp_path, 60, tmp_path / "log")
    assert stdout.strip() == "partial"
    assert failed == "exit 1: RuntimeError: compile failed"
    assert (tmp_path / "log").read_text().strip() == "RuntimeError: compile failed"


@pytest.mark.slow
def test_smoke_run_on_the_cpu_gives_every_row(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the smoke run would train every variant")
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    names = [name for name, *_ in gpu.VARIANTS]
    assert list(results["variants"]) == names
    for name, _kind, _args, needs_cuda in gpu.VARIANTS:
        r = results["variants"][name]
        if name in (gpu.BASELINE, gpu.HF, gpu.DEFAULTS):
            assert r["status"] == "ok", r
            assert r["samples_per_second"] > 0 and r["loop_samples_per_second"] > 0
            assert 0.0 <= r["test_accuracy"] <= 1.0
        else:
            assert r["status"] == "skipped", r
            assert r["reason"] == ("needs CUDA" if needs_cuda else "not in --smoke without CUDA")
    mfu = results["mfu"]
    assert mfu["gpu"] == "no CUDA device" and mfu["peak_tflops"] is None and mfu["mfu"] is None
    assert mfu["achieved_tflops"] > 0
    predict = results["predict"]
    assert predict["status"] == "ok", predict
    assert predict["n"] == 32 and predict["agree"] == 32  # the same model in fp32 on both sides
    assert predict["expkit"] > 0 and predict["pipeline"] > 0 and predict["pipeline_batched"] > 0
    # the table: a header, then one row per variant, the MFU and the predict rows
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    firsts = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert firsts[: len(names)] == names
    assert "skipped: needs CUDA" in rows[names.index("expkit trainer.compile=true")]
    assert firsts[len(names)].startswith("MFU of the fastest")
    assert "unknown GPU (no CUDA device)" in rows[len(names)]
    assert firsts[len(names) + 1].startswith("expkit predict (fp32, batch 8)")
    assert "32/32" in rows[len(names) + 3]
    assert (tmp_path / "gpu_logs" / "02-expkit.stderr").is_file()


def test_flash_attention_without_its_package_is_refused(make_cfg, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "flash_attn" else real(name, *a),
    )
    with pytest.raises(ConfigError) as info:
        validate(make_cfg("model.attn_implementation=flash_attention_2"))
    message = str(info.value)
    assert "model.attn_implementation=flash_attention_2 needs the flash-attn package" in message
    assert "use sdpa" in message and "\n" not in message


def test_flash_attention_on_the_cpu_is_refused(make_cfg, monkeypatch):
    real = importlib.util.find_spec
    installed = real("json")  # any spec: flash-attn "installed"
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: installed if name == "flash_attn" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"needs a CUDA device, not trainer\.device=cpu"):
        validate(make_cfg("model.attn_implementation=flash_attention_2", "trainer.device=cpu"))
    validate(make_cfg("model.attn_implementation=flash_attention_2", "trainer.device=cuda"))
    validate(make_cfg("model.attn_implementation=sdpa", "trainer.device=cpu"))


@pytest.mark.slow
def test_flash_attention_is_refused_before_a_run_opens(tmp_path):
    if FLASH_INSTALLED:
        pytest.skip("flash-attn is installed here")
    proc = run_cli("model=tiny", "model.attn_implementation=flash_attention_2", cwd=tmp_path)
    _assert_one_line_error(proc, "model.attn_implementation=flash_attention_2 needs the flash-attn")
    _assert_no_run_recorded(tmp_path)
    assert not list((tmp_path / "runs").glob("*/*/mlflow_run.json"))
