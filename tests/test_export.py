"""`aigc-jax export`: the artifact runs in a virtual environment with only jax and flatbuffers (no flax, no
aigc_jax) and its rows equal the library's ``sample_fn(params, key_i, 1, ...)[0]``."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import venv
from pathlib import Path

import jax
import numpy as np
import pytest

import aigc_jax
from aigc_jax import cli
from tests.helpers import tiny_run

B = 3
CASES = {  # experiment: (export settings, conditions per row)
    "cflow-mnist": ({"steps": 3, "sampler": "heun", "guidance": 2.0}, "label"),
    "dcgan-mnist": ({}, None),
    "pix2pix-mnist": ({}, "input"),
    "gpt-shakespeare-char-cpu": ({"tokens": 4, "temperature": 0.8}, "prompt"),
}
# Under `-m slow`: a label like cflow-mnist's on a VAE's sampler, and a flow sampled in an autoencoder's latent
# (its tiny run is made for this test only).
SLOW_CASES = {
    "latent-flow-mnist": ({"steps": 3}, None),
    "cvae-mnist": ({}, "label"),
}


def _closure(names: list[str]) -> set[str]:
    """The installed distributions ``names`` need (their requirements without extras, recursively)."""
    seen, todo = set(), list(names)
    while todo:
        name = re.split(r"[<>=!~ ;\[]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for req in importlib.metadata.requires(name) or []:
            if "extra ==" not in req:
                todo.append(req)
    return seen


def _jax_only_venv(root: Path) -> Path:
    """A venv whose site-packages holds links to jax's installed dependency closure and flatbuffers only."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    site = next(root.glob("lib/python*/site-packages"))
    for name in _closure(["jax", "flatbuffers"]):
        dist = importlib.metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = Path(dist.locate_file(top))
            if top.endswith(".pth") or top == ".." or not src.exists() or (site / top).exists():
                continue
            (site / top).symlink_to(src)
    return root / "bin" / "python"


def _conditions(gen, kind, i):
    if kind == "label":
        return {"label": np.array([i % gen.spec.condition("label").num_classes], np.int32)}
    if kind == "input":
        rng = np.random.default_rng(i)
        return {"input": rng.uniform(size=(1, *gen.spec.condition("image").shape)).astype(np.float32)}
    if kind == "prompt":
        return {"prompt": np.array([[1 + i]], np.int32)}
    return {}


def _export(root: Path, cases: dict) -> Path:
    """Each case's tiny run exported to ``root/NAME.out``, with the library's rows and their inputs in
    ``root/NAME.npz``."""
    root.mkdir(exist_ok=True)
    for name, (settings, kind) in cases.items():
        wd = tiny_run(name)  # the runs test_conformance.py checks (made once per session)
        flags = [f"--setting={k}={v}" for k, v in settings.items()]
        assert cli.main(["export", str(wd), str(root / f"{name}.out"), *flags]) == 0
        gen = aigc_jax.load(wd)
        keys = jax.random.split(jax.random.key(7), B)
        conds = [_conditions(gen, kind, i) for i in range(B)]
        rows = [np.asarray(gen.sample_fn(gen.params, keys[i], 1, **conds[i], **settings))[0] for i in range(B)]
        inputs = {"key_data": np.asarray(jax.random.key_data(keys))}
        if kind is not None:
            inputs[kind] = np.concatenate([c[kind] for c in conds])
        if name == "cflow-mnist":  # the null class is the unconditional model
            inputs["label"][-1] = gen.spec.condition("label").num_classes
            rows[-1] = np.asarray(gen.sample_fn(gen.params, keys[-1], 1, **settings))[0]
        np.savez(root / f"{name}.npz", expected=np.stack(rows), **inputs)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("export"), CASES)


PROBE = r"""
import json, sys
from pathlib import Path
import numpy as np
for banned in ("flax", "aigc_jax", "optax"):
    try:
        __import__(banned)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{banned} is importable in the jax-only venv")
import jax
root = Path(sys.argv[1])
for name in sys.argv[2:]:
    out = root / f"{name}.out"
    manifest = json.loads((out / "manifest.json").read_text())
    exp = jax.export.deserialize((out / "sample.jaxexport").read_bytes())
    data = np.load(root / f"{name}.npz")
    args = [data[i["name"]] for i in manifest["inputs"]]
    got = np.asarray(exp.call(*args))
    expected = data["expected"]
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=name)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=name)
    print(name, "ok", got.shape)
"""


def _probe(root: Path, names, tmp_path: Path) -> None:
    """Runs PROBE over ``names`` in a virtual environment with jax alone."""
    python = _jax_only_venv(tmp_path / "venv")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    r = subprocess.run([str(python), "-I", str(probe), str(root), *names], capture_output=True, text=True,
                       timeout=600, env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.count(" ok ") == len(names)


def test_exported_samplers_run_with_jax_alone_and_equal_the_library(exported, tmp_path):
    _probe(exported, list(CASES), tmp_path)


@pytest.mark.slow
def test_the_other_exported_samplers_run_with_jax_alone_and_equal_the_library(tmp_path):
    _probe(_export(tmp_path / "export", SLOW_CASES), list(SLOW_CASES), tmp_path)


def test_manifest_describes_the_artifact(exported):
    m = json.loads((exported / "cflow-mnist.out" / "manifest.json").read_text())
    assert m["experiment"] == "cflow-mnist" and m["step"] == 2 and len(m["config_sha256"]) == 64
    assert m["platforms"] == ["cpu", "cuda", "tpu"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in m["inputs"]] == [("key_data", "uint32", ["b", 2]),
                                                                          ("label", "int32", ["b"])]
    assert m["outputs"][0]["shape"] == ["b", 28, 28, 1]
    assert m["settings"] == {"steps": 3, "sampler": "heun", "guidance": 2.0, "eta": 0.0}
    assert m["size_bytes"] == (exported / "cflow-mnist.out" / "sample.jaxexport").stat().st_size
    assert m["first_call_compile_seconds"] > 0
    gpt = json.loads((exported / "gpt-shakespeare-char-cpu.out" / "manifest.json").read_text())
    assert [i["shape"] for i in gpt["inputs"]] == [["b", 2], ["b", 1]] and gpt["outputs"][0]["dtype"] == "int32"


def test_export_refuses_a_used_folder_and_bad_settings(exported, capsys):
    wd = tiny_run("cflow-mnist")
    used = exported / "cflow-mnist.out"
    before = sorted(p.name for p in used.iterdir())
    assert cli.main(["export", str(wd), str(used)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in used.iterdir()) == before
    fresh = exported / "fresh"
    assert cli.main(["export", str(wd), str(fresh), "--sampler", "rk4"]) == 2
    assert "sampler='rk4': expected one of ddim, ddpm, euler, heun" in capsys.readouterr().err
    assert cli.main(["export", str(wd), str(fresh), "--setting", "colour=2"]) == 2
    assert "has no sampler setting 'colour'" in capsys.readouterr().err
    assert cli.main(["export", str(wd), str(fresh), "--platforms", "cpu,metal"]) == 2
    assert "platforms metal: expected some of cpu, cuda, tpu" in capsys.readouterr().err
    assert not fresh.exists() and not list(exported.glob(".fresh.*"))
