"""A checkpoint restores onto other device counts and meshes, and training continues where it stopped.

8 -> 4 -> 2 -> 1 simulated devices with a different mesh at each restart (data, data x fsdp, fsdp, one device),
and a GPT sharded over data, fsdp and tensor continued on one device; each run is stopped (``stop_at``, as a
preemption would) and resumed, so its learning-rate schedule is the uninterrupted run's. The params must equal
an uninterrupted one-device run to 1e-5 (float32: only the reduction order of the gradients over the devices
differs), and metrics.jsonl holds each logged step once.
"""

import json

import jax

from aigc_jax.api import get_config, restore_run
from aigc_jax.parallel import make_mesh
from aigc_jax.train.loop import train
from tests.helpers import tree_max_diff

VAE = ["model.hidden=32", "model.latent_dim=4", "data.batch_size=16", "data.eval_batch_size=32",
       "train.num_eval_batches=1", "train.log_every=2", "train.checkpoint_every=2", "train.eval_every=0",
       "train.sample_every=0", "train.num_samples=4"]


def _steps_logged(wd):
    records = map(json.loads, (wd / "metrics.jsonl").read_text().splitlines())
    return [r["step"] for r in records if r.get("kind") == "train"]


def _params(wd, devices):
    _, state, step = restore_run(wd, mesh=make_mesh("", devices[:1]))
    return step, jax.device_get(state["params"])


def test_restore_onto_8_4_2_1_devices_continues_the_run(tmp_path, devices):
    wd, straight = tmp_path / "elastic", tmp_path / "straight"
    cfg = get_config("vae-mnist", [*VAE, "train.steps=8"])  # one run of 8 steps (its cosine schedule), stopped
    for stop, spec, n in ((2, "data=8", 8), (4, "data=2,fsdp=2", 4), (6, "fsdp=2", 2), (8, "", 1)):
        train(cfg, wd, progress=False, mesh=make_mesh(spec, devices[:n]), stop_at=stop)
    train(get_config("vae-mnist", [*VAE, "train.steps=8"]), straight, progress=False,
          mesh=make_mesh("", devices[:1]))
    (sa, a), (sb, b) = _params(wd, devices), _params(straight, devices)
    assert sa == sb == 8
    assert tree_max_diff(a, b) < 1e-5
    assert _steps_logged(wd) == _steps_logged(straight) == [2, 4, 6, 8]


def test_tensor_parallel_gpt_checkpoint_continues_on_one_device(tmp_path, devices):
    gpt = ["model.layers=2", "model.width=32", "model.heads=4", "model.context=16", "data.batch_size=8",
           "data.eval_batch_size=16", "train.num_eval_batches=1", "train.log_every=2", "train.checkpoint_every=2",
           "train.eval_every=0", "train.sample_every=0", "players.gpt.optim.warmup_steps=0"]
    wd, straight = tmp_path / "tp", tmp_path / "straight"
    train(get_config("gpt-shakespeare-char-cpu", [*gpt, "train.steps=4"]), wd, progress=False,
          mesh=make_mesh("data=2,fsdp=2,tensor=2", devices), stop_at=2)
    _, state, _ = restore_run(wd, mesh=make_mesh("data=2,fsdp=2,tensor=2", devices))
    assert "tensor" in tuple(state["params"]["gpt"]["wte"].sharding.spec)  # it was saved sharded over tensor
    train(get_config("gpt-shakespeare-char-cpu", [*gpt, "train.steps=4"]), wd, progress=False,
          mesh=make_mesh("", devices[:1]))
    train(get_config("gpt-shakespeare-char-cpu", [*gpt, "train.steps=4"]), straight, progress=False,
          mesh=make_mesh("", devices[:1]))
    (sa, a), (sb, b) = _params(wd, devices), _params(straight, devices)
    assert sa == sb == 4
    assert tree_max_diff(a, b) < 1e-5
