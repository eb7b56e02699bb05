"""The registry: declarations checked at registration, no import circles, and a plug-in model from outside the
package (an entry point) trained, sampled and evaluated through the CLI."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import Condition, GenerativeModel, Likelihood, ModelSpec, check_model
from aigc_jax.core.registry import register_model

REPO = Path(__file__).resolve().parent.parent


class _Cfg(ModelConfig):
    pass


def _model_class(**overrides):
    """A minimal model class; ``overrides`` replace its methods or attributes."""

    def spec(self):
        return ModelSpec(output="image", shape=(1, 1, 1))

    body = {
        "players": ("m",),
        "__init__": lambda self, config=None: setattr(self, "config", config),
        "spec": property(spec),
        "init": lambda self, key: ({"m": {}}, {}),
        "loss": lambda self, player, params, state, batch, key: (jnp.zeros(()), ({}, state)),
        "eval_metrics": lambda self, params, state, batch, key: {},
        "_sample": lambda self, params, key, num: jnp.zeros((num, 1, 1, 1)),
    }
    body.update(overrides)
    return type("M", (GenerativeModel,), body)


def test_registration_rejects_a_model_that_does_not_implement_its_declaration():
    with pytest.raises(TypeError, match="does not implement log_prob"):
        register_model("bad", "x", _Cfg, type("L", (_model_class(), Likelihood), {}))
    with pytest.raises(TypeError, match="does not implement _sample"):
        register_model("bad", "x", _Cfg, type("N", (GenerativeModel,), {
            k: v for k, v in _model_class().__dict__.items() if k in ("spec", "init", "loss", "eval_metrics")}))
    with pytest.raises(TypeError, match="overrides the final GenerativeModel.sample"):
        register_model("bad", "x", _Cfg, _model_class(sample=lambda self, params, key, num: None))
    with pytest.raises(TypeError, match="not a subclass"):
        register_model("bad", "x", _Cfg, object)


def test_a_built_model_is_checked_against_its_spec():
    label = Condition("label", "label", required=True, num_classes=3)
    wrong_condition = _model_class(spec=property(lambda self: ModelSpec(output="image", shape=(1, 1, 1),
                                                                        conditions=(label,))))
    with pytest.raises(TypeError, match="declares condition 'label' but its _sample has no such parameter"):
        check_model(wrong_condition())
    nll_without_likelihood = _model_class(spec=property(lambda self: ModelSpec(
        output="image", shape=(1, 1, 1), metrics=("loss", "nll"))))
    with pytest.raises(TypeError, match="offers the nll metric but is not a Likelihood"):
        check_model(nll_without_likelihood())
    likelihood_without_dims = type("L", (_model_class(), Likelihood), {"log_prob": lambda self, p, b, k=None: 0})
    with pytest.raises(TypeError, match="data_dims=0"):
        check_model(likelihood_without_dims())
    check_model(_model_class()())  # the minimal model is valid


def test_core_imports_nothing_above_it():
    code = textwrap.dedent("""
        import sys
        import aigc_jax.core.registry, aigc_jax.core.contract, aigc_jax.core.config
        import aigc_jax
        above = [m for m in sys.modules if m.startswith("aigc_jax.") and not m.startswith("aigc_jax.core")]
        print(above)
    """)
    # Importing aigc_jax.core.* runs aigc_jax/__init__ (the composition root) first; what core itself imports is
    # checked statically: no "from aigc_jax.<not core>" in its files.
    for path in (REPO / "aigc_jax" / "core").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith(("from aigc_jax", "import aigc_jax")):
                assert line.split()[1].startswith("aigc_jax.core"), (path.name, line)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert "aigc_jax.zoo" in out.stdout


def _env(extra_path: str = ""):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=1"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def test_a_plugin_model_trains_samples_and_evaluates_through_the_cli(tmp_path):
    site = tmp_path / "site"
    dist = site / "toy_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aigc_jax.models]\ntoy = tests.toy_model:register\n")
    wd, png = tmp_path / "run", tmp_path / "s.png"
    script = textwrap.dedent(f"""
        from aigc_jax.cli import main
        assert main(["list"]) == 0
        assert main(["train", "toy-mnist", "--workdir", {str(wd)!r}, "--no-progress"]) == 0
        assert main(["sample", {str(wd)!r}, "--num", "9", "--out", {str(png)!r}]) == 0
        assert main(["eval", {str(wd)!r}, "--num-samples", "200", "--no-progress"]) == 0
        assert main(["sample", {str(wd)!r}, "--num", "4", "--out", {str(png)!r}, "--label", "1"]) == 2
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(str(site)),
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "toy-mnist" in out.stdout and "toy" in out.stdout
    assert "--label: toy-mnist is not a conditional model" in out.stderr
    res = json.loads((wd / "eval.json").read_text())
    assert res["metrics"] == ["loss", "nll"]
    # The exact likelihood: the test NLL is the loss metric, and bits/dim is it over the declared 784 dimensions.
    assert res["test_nll"] == pytest.approx(res["test_loss"], rel=1e-6)
    assert res["test_bits_per_dim"] == pytest.approx(res["test_nll"] / (784 * np.log(2)), rel=1e-12)
    # 30 SGD steps at lr 0.1 move the pixel logits from 0 (NLL 784 ln 2 = 543.4 nats) towards the data.
    assert res["test_nll"] < 784 * np.log(2) - 20
    assert png.is_file()
