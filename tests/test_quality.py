"""Quality runs (minutes each): `pytest -m slow`. Excluded from the default suite."""

import json

import pytest

from aigc_jax.cli import main


@pytest.mark.slow
def test_vae_mnist_reaches_the_issue_bounds(tmp_path):
    wd = tmp_path / "vae-mnist"
    assert main(["train", "vae-mnist", "--workdir", str(wd), "--no-progress"]) == 0
    assert main(["eval", str(wd), "--no-progress"]) == 0
    res = json.loads((wd / "eval.json").read_text())
    assert res["iwae_examples"] == 10000 and res["iwae_k"] == 1000
    assert res["test_neg_elbo"] <= 94.0, res
    assert res["iwae1000_nll"] <= 90.0, res
    assert res["iwae1000_nll"] < res["test_neg_elbo"]
