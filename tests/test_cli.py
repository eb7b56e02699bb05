"""The CLI end to end in a temp dir, and one-line errors with non-zero exits for user mistakes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aigc_jax.cli import main
from tests.helpers import png, png_size

TINY = ["--steps", "4", "--set", "model.hidden=16", "--set", "model.latent_dim=2", "--set", "data.batch_size=16",
        "--set", "data.eval_batch_size=64", "--set", "train.num_eval_batches=1", "--set", "train.log_every=2",
        "--set", "train.checkpoint_every=2", "--set", "train.num_samples=16", "--no-progress"]


def _err_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "vae-mnist", "--workdir", str(wd), *TINY]) == 0
    return wd


def test_train_writes_the_run_directory(trained):
    wd = trained
    cfg = json.loads((wd / "config.json").read_text())
    assert cfg["train"]["steps"] == 4 and cfg["model"]["hidden"] == [16]
    assert sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    lines = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == [2, 4]
    assert any(r["kind"] == "eval" and np.isfinite(r["neg_elbo"]) for r in lines)
    assert list(wd.glob("events.out.tfevents.*"))
    grid = png(wd / "samples" / "step_4.png")
    assert grid.size[0] > 28 * 4


def test_train_again_resumes_and_extends(trained, capsys):
    assert main(["train", "vae-mnist", "--workdir", str(trained), *TINY]) == 0
    assert "already trained to step 4" in capsys.readouterr().out


def test_sample_and_eval(trained, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["sample", str(trained), "--num", "9", "--out", str(out), "--seed", "1"]) == 0
    assert png_size(out) == ((3 * 30 + 2) * 2, (3 * 30 + 2) * 2)
    assert main(["eval", str(trained), "--num-samples", "50", "--importance-samples", "10", "--no-progress"]) == 0
    res = json.loads((trained / "eval.json").read_text())
    assert res["iwae_examples"] == 50 and res["iwae_k"] == 10 and res["test_examples"] == 50
    assert np.isfinite(res["iwae10_nll"]) and np.isfinite(res["test_neg_elbo"])
    assert "iwae10_nll" in capsys.readouterr().out


def test_bits_per_dim_of_a_beta_vae_come_from_its_likelihood_not_its_loss(tmp_path):
    wd = tmp_path / "beta"
    assert main(["train", "beta-vae-mnist", "--workdir", str(wd), *TINY, "--set", "model.beta=50"]) == 0
    assert main(["eval", str(wd), "--metrics", "loss,nll", "--num-samples", "64", "--importance-samples", "10",
                 "--no-progress"]) == 0
    res = json.loads((wd / "eval.json").read_text())
    assert res["test_loss"] > res["test_neg_elbo"] + 1e-3  # the loss weights the KL by beta
    # The only bits/dim is the likelihood's: the importance-weighted NLL over the 784 declared dimensions.
    assert [k for k in res if "bits" in k] == ["iwae10_bits_per_dim"]
    assert res["iwae10_bits_per_dim"] == pytest.approx(res["iwae10_nll"] / (np.log(2) * 784), rel=1e-12)
    # A valid bound: the k=10 estimate of -log p(x) is at most -ELBO on average (same binarized images).
    assert res["iwae10_nll"] <= res["test_neg_elbo"] + 0.5


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "no-such-model"], "unknown experiment 'no-such-model': expected one of"),
        (["train", "vae-mnist", "--set", "train.bogus=1"], "unknown config key 'train.bogus'"),
        (["train", "vae-mnist", "--set", "data.batch_size=abc"], "bad value 'abc' for data.batch_size"),
        (["train", "vae-mnist", "--mesh", "data=3"], "uses 3 devices but 8 are available"),
        (["train", "vae-mnist", "--set", "data.batch_size=12"], "use a multiple of 8"),
        (["train", "vae-mnist", "--set", "data.seed=-1"], "bad value -1 for data.seed: expected an integer in 0.."),
        (["train", "pixelcnn-mnist", "--set", "data.binarize=none"], "pixelcnn models binary pixels"),
        (["train", "vae-mnist", "--set", "data.binarize=none"], "vae models binary pixels"),
        (["train", "vae-mnist", "--steps", "x"], "invalid int value"),
        (["train", "vae-mnist", "--steps", "0"], "bad value 0 for train.steps: expected a positive integer"),
        (["train", "vae-mnist", "--set", "data.name=tfds:"], "needs a dataset name"),
        (["train", "vae-mnist", "--set", "data.path=/nonexistent"], "is not a folder"),
        (["sample", "/nonexistent/run", "--out", "x.png"], "run directory /nonexistent/run does not exist"),
        (["eval", "/nonexistent/run"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--workdir", str(tmp_path / "w"), "--no-progress"]
    assert main(argv) == 2
    err = _err_line(capsys)
    assert needle in err, err
    assert not (tmp_path / "w").exists(), "a failed start left a run directory behind"


def test_sample_mistakes(trained, tmp_path, capsys):
    assert main(["sample", str(trained), "--out", str(tmp_path / "x.png"), "--label", "3"]) == 2
    assert "is not a conditional model" in _err_line(capsys)
    assert main(["sample", str(trained), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "expected a .png file name" in _err_line(capsys)
    assert main(["eval", str(trained), "--metrics", "label_accuracy"]) == 2  # an unconditional VAE
    assert "expected a subset of loss,nll,fid,kid,is,pr" in _err_line(capsys)
    assert not (tmp_path / "x.png").exists()


def test_resume_with_a_different_model_is_refused(trained, capsys):
    assert main(["train", "vae-mnist", "--workdir", str(trained), *TINY, "--set", "model.latent_dim=3"]) == 2
    assert "differs in model.latent_dim" in _err_line(capsys)
    clip = ["--set", "players.vae.optim.clip_norm=1.0"]  # adds a clipping state: another optimizer state
    assert main(["train", "vae-mnist", "--workdir", str(trained), *TINY, *clip]) == 2
    assert "differs in players.vae.optim.clip_norm" in _err_line(capsys)


def test_resume_may_change_the_learning_rate_and_eval_batch(trained, tmp_path, capsys):
    import shutil

    wd = tmp_path / "copy"
    shutil.copytree(trained, wd)
    changed = ["--set", "players.vae.optim.lr=1e-4", "--set", "data.eval_batch_size=32", "--steps", "6"]
    assert main(["train", "vae-mnist", "--workdir", str(wd), *TINY, *changed]) == 0
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())[-1] == 6


def test_console_script_lists_experiments():
    env = dict(os.environ, XLA_FLAGS="")
    out = subprocess.run([sys.executable, "-m", "aigc_jax.cli", "list"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "vae-mnist" in out.stdout and "1,361,884" in out.stdout  # 784-500-500-50 has 1,361,884 params
