"""Two processes (jax.distributed over localhost, gloo collectives) train the same run as one process.

Each process holds 2 simulated CPU devices and reads only its half of every global batch; the result must equal a
single-process run on a 4-device mesh.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from aigc_jax.api import get_config, restore_run
from aigc_jax.parallel import make_mesh
from aigc_jax.train.loop import train
from tests.helpers import tree_max_diff

ARGS = ["--steps", "4", "--set", "model.hidden=32", "--set", "model.latent_dim=4", "--set", "data.batch_size=16",
        "--set", "data.eval_batch_size=32", "--set", "train.num_eval_batches=2", "--set", "train.log_every=2",
        "--set", "train.checkpoint_every=2", "--set", "train.num_samples=8", "--mesh", "data=4", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path, devices):
    wd = tmp_path / "multi"
    port = _free_port()
    procs = []
    for pid in range(2):
        # The same XLA flags as this process (conftest's optimisation level), with 2 devices per process.
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
        env = dict(os.environ, XLA_FLAGS=" ".join([*flags, "--xla_force_host_platform_device_count=2"]),
                   JAX_PLATFORMS="cpu",
                   AIGC_JAX_COORDINATOR=f"127.0.0.1:{port}", AIGC_JAX_NUM_PROCESSES="2",
                   AIGC_JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "aigc_jax.cli", "train", "vae-mnist", "--workdir", str(wd), *ARGS],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]

    overrides = [a for a in ARGS[3:] if "=" in a and not a.startswith("data=")]
    cfg = get_config("vae-mnist", [*overrides, "train.steps=4"])
    single = tmp_path / "single"
    train(cfg, single, progress=False, mesh=make_mesh("data=4", devices[:4]))
    _, a, sa = restore_run(wd, mesh=make_mesh("data=4", devices[:4]))
    _, b, sb = restore_run(single, mesh=make_mesh("data=4", devices[:4]))
    assert sa == sb == 4
    assert tree_max_diff(jax.device_get(a["params"]), jax.device_get(b["params"])) < 1e-5
    assert not np.allclose(jax.device_get(a["params"]["vae"]["decoder"]["out"]["bias"]), 0)
