"""Several processes (jax.distributed over localhost, gloo collectives) train the same run as one process.

Each process holds 2 simulated CPU devices and reads only its rows of every global batch; the result must equal a
single-process run on as many devices, and the checkpoint they write continues in one process on one device.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from aigc_jax.api import get_config, restore_run
from aigc_jax.parallel import make_mesh
from aigc_jax.train.loop import train
from tests.helpers import tree_max_diff

# A constant learning rate: the multi-process leg trains to step 4 and the single-process one continues to 6, so
# a schedule over train.steps would differ between the legs and the uninterrupted run.
ARGS = ["--steps", "4", "--set", "players.vae.optim.schedule=constant", "--set", "model.hidden=32",
        "--set", "model.latent_dim=4", "--set", "data.batch_size=16", "--set", "data.eval_batch_size=32",
        "--set", "train.num_eval_batches=2", "--set", "train.log_every=2", "--set", "train.checkpoint_every=2",
        "--set", "train.num_samples=8", "--mesh", "data=4", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(wd, num_processes: int, devices_per_process: int, mesh: str, steps: int = 4):
    port = _free_port()
    args = [a if a != "data=4" else mesh for a in ARGS]
    args[args.index("--steps") + 1] = str(steps)
    procs = []
    for pid in range(num_processes):
        # The same XLA flags as this process (conftest's optimisation level), with its own device count.
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
        env = dict(os.environ,
                   XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices_per_process}"]),
                   JAX_PLATFORMS="cpu",
                   AIGC_JAX_COORDINATOR=f"127.0.0.1:{port}", AIGC_JAX_NUM_PROCESSES=str(num_processes),
                   AIGC_JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "aigc_jax.cli", "train", "vae-mnist", "--workdir", str(wd), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=420) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]


def _config(steps: int):
    overrides = [a for a in ARGS[3:] if "=" in a and not a.startswith("data=")]
    return get_config("vae-mnist", [*overrides, f"train.steps={steps}"])


def _records(wd):
    return [json.loads(line)["step"] for line in (wd / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "train"]


# Four processes on two cores take ~45 s: under the slow marker (`pytest -m slow`), the two-process case in CI.
@pytest.mark.parametrize("num_processes", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_processes_equal_one_and_the_checkpoint_continues_in_one(tmp_path, devices, num_processes):
    """2 or 4 processes of 2 devices each (data over all of them, each process feeding its rows) train as one
    process on the same number of devices; the 2-process checkpoint (one data-iterator file per process) then
    resumes in a single process on one device and continues to the params of an uninterrupted single-process run.
    Tolerance 1e-5: the reductions run over 4 or 8 devices, then over 1."""
    n = 2 * num_processes
    wd = tmp_path / "multi"
    _launch(wd, num_processes, 2, f"data={n}")
    assert sorted(p.name for p in (wd / "checkpoints" / "4" / "data").glob("process_*")) == [
        f"process_{i}-of-{num_processes}.json" for i in range(num_processes)]
    single = tmp_path / "single"
    train(_config(4), single, progress=False, mesh=make_mesh(f"data={n}", devices[:n]))
    _, a, sa = restore_run(wd, mesh=make_mesh(f"data={n}", devices[:n]))
    _, b, sb = restore_run(single, mesh=make_mesh(f"data={n}", devices[:n]))
    assert sa == sb == 4
    assert tree_max_diff(jax.device_get(a["params"]), jax.device_get(b["params"])) < 1e-5
    assert not np.allclose(jax.device_get(a["params"]["vae"]["decoder"]["out"]["bias"]), 0)

    if num_processes == 4:  # the 2-process case also continues the checkpoint in one process
        return
    # N processes -> 1 process on 1 device, two more steps; against 6 uninterrupted steps on 1 device.
    train(_config(6), wd, progress=False, mesh=make_mesh("", devices[:1]))
    straight = tmp_path / "straight"
    train(_config(6), straight, progress=False, mesh=make_mesh("", devices[:1]))
    _, c, sc = restore_run(wd, mesh=make_mesh("", devices[:1]))
    _, d, _ = restore_run(straight, mesh=make_mesh("", devices[:1]))
    assert sc == 6
    assert tree_max_diff(jax.device_get(c["params"]), jax.device_get(d["params"])) < 1e-5
    assert _records(wd) == _records(straight) == [2, 4, 6]  # each logged step once, none lost at the switch
