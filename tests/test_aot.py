"""`aigc-jax compile`: the trainer's sharded step compiled from shapes, on 8 simulated CPU devices and on a v5p
topology through libtpu (no TPU attached); the zoo's steps compile with no involuntary full rematerialization."""

import json
import os
import subprocess
import sys

import jax
import pytest

from aigc_jax.api import get_config
from aigc_jax.core.errors import UserError
from aigc_jax.core.registry import list_experiments
from aigc_jax.parallel import make_mesh
from aigc_jax.train import aot
from tests.helpers import COVERED


@pytest.fixture
def no_compilation_cache():
    """A cache hit skips the partitioner, and with it the warnings these tests count."""
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    yield
    jax.config.update("jax_enable_compilation_cache", before)


def test_topology_names():
    assert aot.parse_topology("v5p-8") == ("v5p", "2x2x1")
    assert aot.parse_topology("v5p-64") == ("v5p", "2x4x4")
    assert aot.parse_topology("V5P-256") == ("v5p", "4x4x8")
    assert aot.parse_topology("v5p:4x4x4") == ("v5p", "4x4x4")
    with pytest.raises(UserError, match=r"unknown TPU slice 'v5p-6': expected one of v5p-8, v5p-16"):
        aot.parse_topology("v5p-6")
    with pytest.raises(UserError, match=r"bad --topology 'tpu': expected a slice name such as v5p-64"):
        aot.parse_topology("tpu")


HLO = """
  %all-gather-start.1 = (bf16[4,128]{1,0}, bf16[16,128]{1,0}) all-gather-start(bf16[4,128]{1,0} %p), dimensions={0}
  %all-gather-done.1 = bf16[16,128]{1,0} all-gather-done((bf16[4,128]{1,0}, bf16[16,128]{1,0}) %all-gather-start.1)
  %reduce-scatter.2 = f32[8,64]{1,0} reduce-scatter(f32[32,64]{1,0} %g), dimensions={0}, to_apply=%add
  %all-reduce.3 = f32[] all-reduce(f32[] %loss), to_apply=%add
  %all-reduce.4 = (f32[10]{0}, /*index=1*/s32[3]{0}) all-reduce(f32[10]{0} %a, s32[3]{0} %b), to_apply=%add
"""


def test_collectives_are_counted_with_their_sizes():
    assert aot.collectives(HLO) == {
        "all-gather": {"count": 1, "bytes": 16 * 128 * 2},  # the gathered result, once (start/done is one op)
        "all-reduce": {"count": 2, "bytes": 4 + 10 * 4 + 3 * 4},  # a combined (tuple) all-reduce moves each array
        "reduce-scatter": {"count": 1, "bytes": 8 * 64 * 4},
    }


def test_the_warning_is_caught_when_it_happens(devices, no_compilation_cache, monkeypatch):
    """A control: without the FSDP constraint on its embedding lookup, the GPT step on the three-axis mesh does make
    XLA replicate an activation, and the report counts it."""
    from aigc_jax.models.autoregressive import gpt

    monkeypatch.setattr(gpt, "constrain", lambda x, spec: x)
    cfg = get_config("gpt-shakespeare-char-cpu", variant="tiny")
    rep = aot.compile_report(cfg, make_mesh("data=2,fsdp=2,tensor=2", devices), sampler=False)
    assert rep["train_step"]["involuntary_rematerializations"] >= 1


def _mesh_for(name):
    """The three-axis mesh for the tensor-parallel GPTs; data x fsdp for models with no tensor-parallel layout
    (their steps refuse tensor > 1 with a clear error)."""
    return "data=2,fsdp=2,tensor=2" if name.startswith("gpt") else "data=4,fsdp=2"


# The experiments whose tiny step differs from another's only in a scalar or a data transform (the conformance
# suite's COVERED) compile under `-m slow`; so do, here, ddpm-mnist, whose step is cflow-mnist's U-Net (the same
# forward and backward program) with another noising path and target, and the label-conditioned cgan-mnist and
# cvae-mnist, whose steps are dcgan-mnist's and vae-mnist's with a label embedded or concatenated (no array that
# the mesh shards differently).
AOT_COVERED = (*COVERED, "ddpm-mnist", "cgan-mnist", "cvae-mnist")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow if n in AOT_COVERED else ())
                                  for n in list_experiments()])
def test_no_involuntary_rematerialization_in_any_zoo_step(name, devices, no_compilation_cache):
    cfg = get_config(name, variant="tiny")
    rep = aot.compile_report(cfg, make_mesh(_mesh_for(name), devices), sampler=False)
    step = rep["train_step"]
    assert step["involuntary_rematerializations"] == 0
    assert step["memory_bytes"]["total"] > 0 and step["flops"] > 0
    assert step["collectives"], "a sharded step communicates"


def test_gpt_on_a_v5p_topology_reports_memory_flops_and_roofline(no_compilation_cache):
    """The tiny GPT, scanned layers, FSDP x tensor on a v5p-8 (2x2x1) compiled by libtpu: per-chip memory, XLA's
    FLOPs (above the model's 6N + attention estimate, which excludes no recomputation here), the collectives of
    FSDP, and a roofline."""
    aot.quiet_tpu_environment()
    devices = aot.topology_devices(*aot.parse_topology("v5p-8"))
    assert len(devices) == 4 and devices[0].platform == "tpu"
    cfg = get_config("gpt-124m", ["model.scan_layers=true"], variant="tiny")
    rep = aot.compile_report(cfg, make_mesh("fsdp=2,tensor=2", devices), chip=aot.CHIPS["v5p"])
    step = rep["train_step"]
    assert rep["device_kind"].startswith("TPU v5")
    assert step["involuntary_rematerializations"] == 0 and step["fits"]
    assert 0 < step["memory_bytes"]["total"] < 2**30
    assert step["flops"] > step["model_flops"] > 0
    assert {"all-gather", "reduce-scatter"} & set(step["collectives"]) or "all-reduce" in step["collectives"]
    roof = step["roofline"]
    assert roof["step_seconds"] == max(roof["compute_seconds"], roof["memory_seconds"]) > 0
    assert 0 < roof["mfu"] < 1
    assert rep["sampler"]["memory_bytes"]["total"] > 0


def test_cli_compile_prints_json_and_nothing_on_stderr():
    """No TPU is attached: libtpu's warnings about TPU_ACCELERATOR_TYPE and worker hostnames must not reach the
    user; a bad topology is one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_") and k != "JAX_PLATFORMS"}
    cmd = [sys.executable, "-m", "aigc_jax.cli", "compile", "gpt-shakespeare-char-cpu", "--topology", "v5p-8",
           "--set", "model.layers=1", "--set", "model.width=32", "--set", "model.heads=2", "--no-sampler", "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""
    rep = json.loads(out.stdout)
    assert rep["topology"] == "v5p:2x2x1" and rep["devices"] == 4 and rep["mesh"]["data"] == 4
    assert rep["train_step"]["roofline"]["bound"] in ("compute", "memory")
    # Any command on this host (libtpu installed, no TPU chip) starts JAX without libtpu's start-up warnings.
    listed = subprocess.run(cmd[:3] + ["list"], env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and listed.stderr == "" and "gpt-124m" in listed.stdout
    bad = subprocess.run(cmd[:5] + ["--topology", "v5p-7"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown TPU slice 'v5p-7'" in bad.stderr
