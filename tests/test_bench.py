"""`aigc-jax bench`: each experiment's default train step as `train` would run it on this host, with XLA's FLOP
count checked against the closed form and MFU against the peak measured in the same run."""

from __future__ import annotations

import json

import pytest

from aigc_jax.cli import main
from aigc_jax.train import bench, host


def test_bench_measures_the_default_steps_as_train_runs_them(tmp_path, capsys, monkeypatch):
    # The measuring processes see this machine as a user's shell does: no simulated devices, fast defaults on.
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=1")
    monkeypatch.setenv("AIGC_JAX_FAST_DEFAULTS", "1")
    # The peak from a 512^3 product, 5 per round (the command's 2048^3, 20 per round, takes seconds): the test
    # checks how MFU is formed from the peak, not the peak's value.
    peak = bench.matmul_peak
    monkeypatch.setattr(bench, "matmul_peak", lambda n, dtype="float32": peak(512, dtype, reps=5))
    out = tmp_path / "bench.json"
    assert main(["bench", "vae-mnist", "gpt-shakespeare-char-cpu", "--seconds", "0.3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    vae, gpt = result["experiments"]
    assert result["host"]["cores"] == host.cpu_cores() and result["peak_flops"]["float32"] > 1e9
    # 784-500-500-(2x50) encoder and 50-500-500-784 decoder: 2 FLOPs per weight and example forward, 2 for the
    # weight gradients and 2 for the input gradients (none for the data's): the matmuls of one batch-128 step.
    weights = 784 * 500 + 500 * 500 + 500 * 100 + 50 * 500 + 500 * 500 + 500 * 784
    matmuls = 128 * (6 * weights - 2 * 784 * 500)
    assert vae["devices"] == 1 and vae["batch"] == 128  # the MLP VAE is not split, and bf16 where native:
    assert vae["compute_dtype"] == ("bfloat16" if host.native_bf16() else "float32")
    assert 1.0 <= vae["flops_per_step"] / matmuls < 1.1  # plus the elementwise work (Adam, the loss, the NaN guard)
    for row in (vae, gpt):
        assert row["timed_steps"] >= 3 and row["steps_per_sec"] > 0 and row["compile_s"] > 0
        assert row["examples_per_sec"] == pytest.approx(row["steps_per_sec"] * row["batch"])
        peak = result["peak_flops"][row["compute_dtype"]]
        assert row["mfu"] == pytest.approx(row["flops_per_step"] * row["steps_per_sec"] / peak)
        assert f"| `{row['experiment']}` | {row['steps_per_sec']:.1f} |" in printed
    # The GPT gets train's choices for this CPU: the batch of 12 over one device per core, bf16 where native.
    assert gpt["devices"] == max(1, host.data_ways(12, host.cpu_cores()))
    assert gpt["compute_dtype"] == ("bfloat16" if host.native_bf16() else "float32")
    assert gpt["fast_defaults"].startswith("fast defaults for this CPU") or gpt["devices"] == 1


@pytest.mark.parametrize("argv,message", [
    (["bench", "no-such-model"], "unknown experiment 'no-such-model': expected one of"),
    (["bench", "vae-mnist", "--set", "train.bogus=1"], "unknown config key 'train.bogus'"),
    (["bench", "vae-mnist", "--seconds", "0"], "--seconds 0.0: expected a positive number"),
])
def test_bench_refuses_bad_input_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bench_never_overwrites_its_output(tmp_path, capsys):
    out = tmp_path / "mine.json"
    out.write_text("keep")
    assert main(["bench", "vae-mnist", "--out", str(out)]) == 2
    assert "exists; choose a new file" in capsys.readouterr().err and out.read_text() == "keep"
