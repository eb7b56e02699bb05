"""Fast defaults on a CPU host (`aigc_jax.train.host`, `aigc-jax train`): one XLA device per core that splits the
batch, bfloat16 compute where the CPU has it natively and the model offers it, announced in one line, and left
alone where the user chose (a mesh, a device count, a dtype) or a resumed run was trained otherwise."""

import json
import subprocess
import sys

from aigc_jax.api import get_config
from aigc_jax.cli import main
from aigc_jax.train import host


def test_the_device_count_splits_the_batch_and_bf16_needs_a_model_that_offers_it():
    assert host.data_ways(12, 2) == 2 and host.data_ways(12, 5) == 4 and host.data_ways(7, 2) == 1
    gpt = get_config("gpt-shakespeare-char-cpu")
    assert host.bf16_override(gpt, bf16=True) == ["model.compute_dtype=bfloat16"]
    assert host.bf16_override(gpt, bf16=False) == []
    assert host.bf16_override(get_config("vae-mnist"), bf16=True) == ["model.compute_dtype=bfloat16"]
    assert host.bf16_override(get_config("conv-vae-mnist"), bf16=True) == []  # its convolutions are float32 only
    assert host.bf16_override(get_config("dcgan-mnist"), bf16=True) == []  # no compute dtype at all
    assert host.bf16_override(get_config("gpt-shakespeare-char-cpu", ["model.compute_dtype=bfloat16"]),
                              bf16=True) == []
    line = host.describe(2, ["model.compute_dtype=bfloat16"])
    assert line == ("fast defaults for this CPU: the batch split over 2 XLA devices (one per core); bfloat16 "
                    "compute with float32 master weights (the CPU has native bfloat16) (--no-fast-defaults turns "
                    "them off)")
    assert host.describe(1, []) == ""


def test_the_device_count_is_set_before_jax_starts_unless_the_user_set_one():
    code = ("from aigc_jax.train import host; n = host.prepare_cpu_devices(2); import jax; "
            "print(n, len(jax.devices()), host.prepare_cpu_devices(2))")
    env = {"PATH": "", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["2", "2", "0"]  # once JAX has started, nothing changes
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["0", "3", "0"]


def test_train_announces_bf16_and_a_resumed_run_keeps_its_dtype(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIGC_JAX_FAST_DEFAULTS", "1")
    tiny = ["--steps", "2", "--set", "model.layers=1", "--set", "model.width=16", "--set", "model.heads=2",
            "--set", "model.context=16", "--set", "data.batch_size=8", "--set", "train.num_eval_batches=1",
            "--set", "train.sample_every=0", "--no-progress"]
    wd = tmp_path / "run"
    monkeypatch.setattr(host, "native_bf16", lambda: True)
    assert main(["train", "gpt-shakespeare-char-cpu", "--workdir", str(wd), *tiny]) == 0
    assert "bfloat16 compute with float32 master weights" in capsys.readouterr().out
    assert json.loads((wd / "config.json").read_text())["model"]["compute_dtype"] == "bfloat16"
    # Resumed on a host without native bfloat16: the run keeps the dtype it was trained with, silently.
    monkeypatch.setattr(host, "native_bf16", lambda: False)
    assert main(["train", "gpt-shakespeare-char-cpu", "--workdir", str(wd), *tiny[2:], "--steps", "3"]) == 0
    assert "fast defaults" not in capsys.readouterr().out
    assert json.loads((wd / "config.json").read_text())["model"]["compute_dtype"] == "bfloat16"
    # Resumed with the fast defaults off: still the run's own dtype (not a refusal for a changed config).
    assert main(["train", "gpt-shakespeare-char-cpu", "--workdir", str(wd), *tiny[2:], "--steps", "4",
                 "--no-fast-defaults"]) == 0
    assert json.loads((wd / "config.json").read_text())["model"]["compute_dtype"] == "bfloat16"
    # Off, fresh: the experiment's own precision.
    off = tmp_path / "off"
    monkeypatch.setattr(host, "native_bf16", lambda: True)
    assert main(["train", "gpt-shakespeare-char-cpu", "--workdir", str(off), *tiny, "--no-fast-defaults"]) == 0
    assert "fast defaults" not in capsys.readouterr().out
    assert json.loads((off / "config.json").read_text())["model"]["compute_dtype"] == "float32"


def test_the_cli_keeps_compiled_programs_in_its_cache_unless_told_not_to(tmp_path):
    code = "import jax; from aigc_jax.train import host; print(host.use_compilation_cache() or '-')"
    env = {"PATH": "", "JAX_PLATFORMS": "cpu", "AIGC_JAX_CACHE": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split()[-1] == str(tmp_path / "xla") and (tmp_path / "xla").is_dir()
    for extra in ({"AIGC_JAX_COMPILE_CACHE": "0"}, {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "theirs")}):
        run = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                             check=True)
        assert run.stdout.split()[-1] == "-"  # off, or the user's own cache is kept


def test_a_mesh_on_the_command_line_gets_its_cpu_devices(tmp_path):
    env = {"PATH": "", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=1",
           "AIGC_JAX_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "aigc_jax.cli", "train", "vae-mnist", "--workdir", str(tmp_path / "run"),
           "--steps", "2", "--mesh", "data=2", "--set", "model.hidden=8", "--set", "data.batch_size=8",
           "--set", "train.num_eval_batches=1", "--set", "train.sample_every=0", "--no-progress"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["mesh"] == "data=2"


def test_a_vae_run_from_before_the_dtype_field_resumes_in_float32(tmp_path, monkeypatch, capsys):
    """A VAE run directory written before VAEConfig had ``compute_dtype`` was trained in float32: resumed on a host
    with native bfloat16, it stays float32 (the fast defaults do not switch a run's precision half-way)."""
    monkeypatch.setenv("AIGC_JAX_FAST_DEFAULTS", "1")
    monkeypatch.setattr(host, "native_bf16", lambda: True)
    tiny = ["--set", "model.hidden=16", "--set", "model.latent_dim=2", "--set", "data.batch_size=8",
            "--set", "train.num_eval_batches=1", "--set", "train.sample_every=0", "--set", "model.iwae_samples=2",
            "--set", "model.iwae_chunk=1", "--no-progress"]
    wd = tmp_path / "run"
    assert main(["train", "vae-mnist", "--workdir", str(wd), "--steps", "2", *tiny, "--no-fast-defaults"]) == 0
    stored = json.loads((wd / "config.json").read_text())
    assert stored["model"].pop("compute_dtype") == "float32"
    (wd / "config.json").write_text(json.dumps(stored))  # as written before the field existed
    capsys.readouterr()
    assert main(["train", "vae-mnist", "--workdir", str(wd), "--steps", "3", *tiny]) == 0
    assert "fast defaults" not in capsys.readouterr().out
    assert json.loads((wd / "config.json").read_text())["model"]["compute_dtype"] == "float32"
    fresh = tmp_path / "fresh"  # a new run on the same host gets bfloat16, announced
    assert main(["train", "vae-mnist", "--workdir", str(fresh), "--steps", "2", *tiny]) == 0
    assert "bfloat16 compute with float32 master weights" in capsys.readouterr().out
    assert json.loads((fresh / "config.json").read_text())["model"]["compute_dtype"] == "bfloat16"
