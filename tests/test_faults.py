"""Bad input and faults, as a table: each case runs the CLI and must end with the stated exit status, exactly one
line on stderr, no traceback, no partial file (``*.tmp``) and none of the user's files changed.

The checkpoint cases damage a copy of a trained run the way a shared bucket or a killed writer would (flipped
bytes, a truncated or deleted file) and check that the damage is found by the per-array checksums, reported in one
line, and that loading falls back to the previous good checkpoint (or stops when none is left).
"""

from __future__ import annotations

import errno
import fcntl
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import aigc_jax
from aigc_jax.cli import main
from aigc_jax.core.errors import UserError

TINY = ["--steps", "4", "--set", "model.hidden=16", "--set", "model.latent_dim=2", "--set", "data.batch_size=16",
        "--set", "data.eval_batch_size=64", "--set", "train.num_eval_batches=1", "--set", "train.log_every=2",
        "--set", "train.checkpoint_every=2", "--set", "train.num_samples=16", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny vae-mnist run with checkpoints at steps 2 and 4 (never modified: cases copy it)."""
    wd = tmp_path_factory.mktemp("faults") / "run"
    assert main(["train", "vae-mnist", "--workdir", str(wd), *TINY]) == 0
    return wd


def _snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _x(n=64, dtype=np.uint8, fill=None):
    x = np.random.default_rng(0).integers(0, 256, (n, 28, 28)).astype(dtype)
    if dtype != np.uint8:
        x = x / 255.0
    if fill is not None:
        x[3, 4, 5] = fill
    return x


def _edited_config(run: Path, tmp: Path, edit) -> str:
    wd = tmp / "edited"
    shutil.copytree(run, wd)
    cfg = json.loads((wd / "config.json").read_text())
    (wd / "config.json").write_text(json.dumps(edit(cfg)))
    return str(wd)


def _set(cfg, path, value):
    node = cfg
    *head, last = path.split(".")
    for k in head:
        node = node[k]
    node[last] = value
    return cfg


# Each case: (id, setup(run, tmp) -> argv, exit status, a fragment of the one stderr line).
T = ["train", "vae-mnist"]
CASES = [
    ("unknown experiment", lambda r, t: ["train", "no-such-model", "--workdir", str(t / "w")], 2,
     "unknown experiment"),
    ("zero steps", lambda r, t: [*T, "--steps", "0", "--workdir", str(t / "w")], 2, "train.steps"),
    ("negative steps", lambda r, t: [*T, "--steps", "-5", "--workdir", str(t / "w")], 2, "train.steps"),
    ("steps not a number", lambda r, t: [*T, "--steps", "abc"], 2, "invalid int value"),
    ("steps not an integer via --set", lambda r, t: [*T, "--set", "train.steps=abc"], 2, "expected an integer"),
    ("unknown config key", lambda r, t: [*T, "--set", "train.stepz=3"], 2, "unknown config key"),
    ("override without =", lambda r, t: [*T, "--set", "train.steps"], 2, "expected key=value"),
    ("lr nan", lambda r, t: [*T, "--set", "players.vae.optim.lr=nan"], 2, "expected a finite number"),
    ("lr inf", lambda r, t: [*T, "--set", "players.vae.optim.lr=inf"], 2, "expected a finite number"),
    ("lr negative", lambda r, t: [*T, "--set", "players.vae.optim.lr=-1"], 2, "expected a positive number"),
    ("unknown player", lambda r, t: [*T, "--set", "players.gan.optim.lr=1"], 2, "players are named"),
    ("seed beyond int64", lambda r, t: [*T, "--set", f"train.seed={2**64}"], 2, "expected an integer in 0.."),
    ("negative seed", lambda r, t: [*T, "--set", "train.seed=-1"], 2, "expected an integer in 0.."),
    ("negative checkpoint interval", lambda r, t: [*T, "--set", "train.checkpoint_every_secs=-1"], 2,
     "checkpoint_every_secs"),
    ("bad mesh axis", lambda r, t: [*T, "--mesh", "rows=2", "--workdir", str(t / "w")], 2, "mesh"),
    ("workdir is a file", lambda r, t: [*T, "--workdir", str(_file(t / "f.txt"))], 2, "is a file"),
    ("workdir not a run", lambda r, t: [*T, "--workdir", str(_user_dir(t))], 2, "is not an aigc-jax run"),
    ("workdir of a running train", lambda r, t: [*T, *TINY, "--workdir", str(_locked(r, t))], 2,
     "is being trained by another process (pid 4242)"),
    ("resume with another model", lambda r, t: [*T, *TINY[:-1], "--set", "model.hidden=32", "--no-progress",
                                               "--workdir", str(_copy(r, t))], 2, "differs in model.hidden"),
    ("missing npz", lambda r, t: [*T, "--set", f"data.name={t / 'none.npz'}"], 2, "not found"),
    ("npz of objects", lambda r, t: [*T, "--set", "data.name=" + _npz(
        t / "o.npz", x_train=np.array([{"a": 1}] * 3, dtype=object), x_test=_x())], 2, "cannot read"),
    ("npz with NaN pixels", lambda r, t: [*T, "--set", "data.name=" + _npz(
        t / "n.npz", x_train=_x(dtype=np.float32, fill=np.nan), x_test=_x())], 2, "NaN or infinite"),
    ("npz floats above 1", lambda r, t: [*T, "--set", "data.name=" + _npz(
        t / "b.npz", x_train=_x(dtype=np.float32, fill=3.0), x_test=_x())], 2, "must lie in [0, 1]"),
    ("npz of vectors", lambda r, t: [*T, "--set", "data.name=" + _npz(
        t / "v.npz", x_train=np.zeros((4, 784), np.uint8), x_test=_x())], 2, "images must be"),
    ("npz without x_train", lambda r, t: [*T, "--set", "data.name=" + _npz(t / "m.npz", x_test=_x())], 2,
     "no array 'x_train'"),
    ("npz of other-sized images", lambda r, t: [*T, "--set", "data.name=" + _npz(
        t / "s.npz", x_train=np.zeros((8, 32, 32), np.uint8), x_test=np.zeros((8, 32, 32), np.uint8)),
        "--workdir", str(t / "w")], 2, "model.image_shape"),
    ("npz with float labels", lambda r, t: [*T, "--set", "data.name=" + _npz(
        t / "l.npz", x_train=_x(), y_train=np.zeros(64, np.float32), x_test=_x())], 2, "labels must be integers"),
    ("sample: no such run", lambda r, t: ["sample", str(t / "nope"), "--out", str(t / "s.png")], 2, "does not exist"),
    ("sample: run is a file", lambda r, t: ["sample", str(_file(t / "f")), "--out", str(t / "s.png")], 2,
     "is a file"),
    ("sample: no config.json", lambda r, t: ["sample", str(_user_dir(t)), "--out", str(t / "s.png")], 2,
     "config.json is not an aigc-jax experiment config"),
    ("sample: config.json not JSON", lambda r, t: ["sample", _bad_json(r, t), "--out", str(t / "s.png")], 2,
     "is not valid JSON"),
    ("sample: config.json a list", lambda r, t: ["sample", _edited_config(r, t, lambda c: [c]), "--out",
                                                 str(t / "s.png")], 2, "not an aigc-jax experiment config"),
    ("sample: config field of a wrong type", lambda r, t: [
        "sample", _edited_config(r, t, lambda c: _set(c, "train.steps", "four")), "--out", str(t / "s.png")], 2,
     'train.steps is "four": expected an integer'),
    ("sample: config field of a wrong shape", lambda r, t: [
        "sample", _edited_config(r, t, lambda c: _set(c, "model.image_shape", [28, 28])), "--out",
        str(t / "s.png")], 2, "model.image_shape (28, 28)"),
    ("sample: config value out of range", lambda r, t: [
        "sample", _edited_config(r, t, lambda c: _set(c, "data.batch_size", 0)), "--out", str(t / "s.png")], 2,
     "data.batch_size"),
    ("sample: no checkpoints", lambda r, t: ["sample", _no_checkpoints(r, t), "--out", str(t / "s.png")], 2,
     "no checkpoints yet"),
    ("sample: zero samples", lambda r, t: ["sample", str(r), "--num", "0", "--out", str(t / "s.png")], 2,
     "expected a positive integer"),
    ("sample: seed beyond int64", lambda r, t: ["sample", str(r), "--seed", str(2**63), "--out", str(t / "s.png")],
     2, "expected an integer in 0.."),
    ("sample: negative seed", lambda r, t: ["sample", str(r), "--seed", "-3", "--out", str(t / "s.png")], 2,
     "expected an integer in 0.."),
    ("sample: out is a directory", lambda r, t: ["sample", str(r), "--out", str(_user_dir(t))], 2,
     "is a directory"),
    ("sample: out not a png", lambda r, t: ["sample", str(r), "--out", str(t / "s.jpg")], 2, "expected a .png"),
    ("sample: out under a file", lambda r, t: ["sample", str(r), "--num", "4", "--out",
                                               str(_file(t / "f") / "s.png")], 2, "/f is a file"),
    ("sample: label for an unconditional model", lambda r, t: ["sample", str(r), "--label", "3", "--out",
                                                               str(t / "s.png")], 2, "not a conditional model"),
    ("sample: prompt for an image model", lambda r, t: ["sample", str(r), "--prompt", "hi", "--out",
                                                        str(t / "s.png")], 2, "is for text models"),
    ("sample: missing step", lambda r, t: ["sample", str(r), "--step", "3", "--out", str(t / "s.png")], 2,
     "no checkpoint at step 3"),
    ("eval: unknown metric", lambda r, t: ["eval", str(r), "--metrics", "fid,bogus"], 2, "--metrics"),
    ("eval: negative samples", lambda r, t: ["eval", str(r), "--num-samples", "-1"], 2, "must be positive"),
    ("eval: not a run", lambda r, t: ["eval", str(_user_dir(t))], 2, "not an aigc-jax experiment config"),
    ("eval: missing step", lambda r, t: ["eval", _copy(r, t), "--step", "3"], 2, "no checkpoint at step 3"),
    ("eval: extractor weights for lenet", lambda r, t: ["eval", str(r), "--metrics", "fid", "--inception-weights",
                                                        "w.pth"], 2, "--inception-weights"),
    ("unknown command", lambda r, t: ["fly"], 2, "invalid choice"),
]


def _file(path: Path) -> Path:
    path.write_text("mine\n")
    return path


def _user_dir(tmp: Path) -> Path:
    d = tmp / "mine"
    d.mkdir(exist_ok=True)
    (d / "notes.txt").write_text("my notes\n")
    (d / "config.json").write_text('{"mine": true}\n')
    return d


def _copy(run: Path, tmp: Path) -> str:
    wd = tmp / "copy"
    shutil.copytree(run, wd)
    return str(wd)


def _bad_json(run: Path, tmp: Path) -> str:
    wd = _copy(run, tmp)
    (Path(wd) / "config.json").write_text('{"model_name": "vae",')
    return wd


def _no_checkpoints(run: Path, tmp: Path) -> str:
    wd = _copy(run, tmp)
    shutil.rmtree(Path(wd) / "checkpoints")
    return wd


_held = []


def _locked(run: Path, tmp: Path) -> str:
    """A copy of the run whose lock another process holds (here: another open file description, which flock
    treats as another holder)."""
    wd = _copy(run, tmp)
    f = open(Path(wd) / ".lock", "w")  # noqa: SIM115  (closed at the end of the test)
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write("4242\n")
    f.flush()
    _held.append(f)
    return wd


@pytest.mark.parametrize("make_argv, code, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(run, tmp_path, capsys, monkeypatch, make_argv, code, fragment):
    monkeypatch.chdir(tmp_path)  # a default --workdir (runs/NAME) would land here, and be caught below
    before_run = _snapshot(run)
    argv = make_argv(run, tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        rc = main(argv)
    finally:
        while _held:
            _held.pop().close()
    err = capsys.readouterr().err.strip()
    assert rc == code, (rc, err)
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert fragment in err, err
    after = _snapshot(tmp_path)
    assert {p: b for p, b in after.items() if p in before} == before, "a file of the user's was changed"
    new = [p for p in after if p not in before]
    assert not [p for p in new if p.name.endswith(".tmp")], new
    assert not (tmp_path / "runs").exists() and not (tmp_path / "w").exists(), "a run directory was left behind"
    assert _snapshot(run) == before_run


def test_the_table_has_at_least_40_cases():
    assert len(CASES) >= 40


def test_load_of_a_file_says_it_is_not_a_directory(tmp_path):
    with pytest.raises(UserError, match="is a file, not a run directory"):
        aigc_jax.load(_file(tmp_path / "run.txt"))


def test_a_full_disk_while_checkpointing_is_one_line(run, tmp_path, capsys, monkeypatch):
    """ENOSPC from the checkpoint writer ends in one line naming the error, exit 1, and no lock or temp file."""
    import orbax.checkpoint as ocp

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "w" / "checkpoints"))

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    capsys.readouterr()
    assert main(["train", "vae-mnist", "--workdir", str(tmp_path / "w"), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"aigc-jax: error: No space left on device: {tmp_path / 'w' / 'checkpoints'}"
    assert not list(tmp_path.rglob("*.tmp"))


# ----------------------------------------------------------------------------------------------------------------
# Damaged checkpoints.


def _data_files(step_dir: Path) -> list[Path]:
    """The array data files of a checkpoint's state (OCDBT's ``d/`` folders)."""
    return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _flip(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage(step_dir: Path, how: str) -> None:
    if how == "flipped bytes":
        for p in _data_files(step_dir):
            _flip(p)
    elif how == "truncated data":
        for p in _data_files(step_dir):
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif how == "deleted data":
        for p in _data_files(step_dir):
            p.unlink()
    elif how == "deleted metadata":
        (step_dir / "state" / "_METADATA").unlink()
    elif how == "deleted manifest":
        (step_dir / "state" / "manifest.ocdbt").unlink()
    else:  # pragma: no cover
        raise ValueError(how)


DAMAGE = ["flipped bytes", "truncated data", "deleted data", "deleted metadata", "deleted manifest"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(run, tmp_path, capsys, how):
    wd = Path(_copy(run, tmp_path))
    good = aigc_jax.sample(run, 4, seed=0, step=2)
    _damage(wd / "checkpoints" / "4", how)
    capsys.readouterr()
    got = aigc_jax.sample(wd, 4, seed=0)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("aigc-jax: warning: checkpoint "), err
    assert "/checkpoints/4" in err and "trying an earlier one" in err
    np.testing.assert_array_equal(got, good)  # the samples of step 2, not NaN or garbage


def test_eval_never_writes_numbers_from_a_corrupt_checkpoint(run, tmp_path, capsys):
    wd = Path(_copy(run, tmp_path))
    for step in ("2", "4"):
        _damage(wd / "checkpoints" / step, "flipped bytes")
    capsys.readouterr()
    assert main(["eval", str(wd), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("trying an earlier one" in e for e in err[:2]), err  # two warnings, one error
    assert err[-1].startswith("aigc-jax: error: no readable checkpoint left in") and "tried steps 4, 2" in err[-1]
    assert not (wd / "eval.json").exists()


def test_training_resumes_from_the_last_good_checkpoint(run, tmp_path, capsys):
    """The damaged step 4 is skipped (and deleted), steps 3-4 are trained again from step 2: the same params as
    the undamaged run (training is bitwise deterministic), and each step's record once."""
    wd = Path(_copy(run, tmp_path))
    _damage(wd / "checkpoints" / "4", "flipped bytes")
    capsys.readouterr()
    assert main(["train", "vae-mnist", "--workdir", str(wd), *TINY]) == 0
    err = capsys.readouterr().err
    assert "checkpoints/4" in err and "trying an earlier one" in err
    records = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4]  # step 4 trained again, logged once
    np.testing.assert_array_equal(aigc_jax.sample(wd, 2), aigc_jax.sample(run, 2))


def test_values_that_do_not_match_their_checksums_are_refused(tmp_path, capsys, monkeypatch):
    """A checkpoint whose arrays read back fine but differ from what was saved (a flipped bit inside a value,
    which the storage format's own checks need not see): here, checksums written for other values."""
    import jax.numpy as jnp

    from aigc_jax.checkpoint import Checkpointer, manager

    ck = Checkpointer(tmp_path / "ck", keep=3)
    good = {"w": jnp.arange(6.0)}
    ck.save(1, good, None, {"step": 1})
    real = manager.checksums
    monkeypatch.setattr(manager, "checksums", lambda state: real({"w": state["w"].at[3].add(1e-6)}))
    ck.save(2, good, None, {"step": 2})
    ck.wait()
    monkeypatch.setattr(manager, "checksums", real)
    with pytest.raises(manager.CheckpointError, match=r"checkpoints?.*/2 is corrupt: 1 array\(s\) do not match"):
        ck.restore(jax.eval_shape(lambda: good), step=2)
    step, state = ck.restore(jax.eval_shape(lambda: good))
    assert step == 1 and np.array_equal(state["w"], good["w"])
    assert "/2 is corrupt" in capsys.readouterr().err
    assert ck.all_steps() == [1]  # the bad one is deleted, so that training can write step 2 again
    ck.close()
