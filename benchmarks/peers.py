"""Our commands against the PyTorch peers' own code, one after the other on the same machine, in one run.

The peers are run unmodified from a scratch copy of ``../shared/peers`` (they write beside themselves), never
copied into the project:

- ``gpt``: nanoGPT's README CPU command (``train.py config/train_shakespeare_char.py --device=cpu --compile=False
  --eval_iters=20 --log_interval=100 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
  --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``, after its own ``prepare.py`` on the repository's
  ``data/tinyshakespeare/input.txt``), then ``aigc-jax train gpt-shakespeare-char-cpu`` as a user types it:
  wall time of each whole command, the median ms per iteration each prints or logs, and the validation loss
  (nanoGPT's 20-batch estimate at step 2000; ours from the run's last evaluation record, with its example count),
  and ours once more with the compilation cache the first run filled (a user's second run);
- ``dcgan``: PyTorch-GAN's ``implementations/dcgan/dcgan.py`` (batch 64, its defaults, one epoch, MNIST laid out
  from ``data/mnist`` so that torchvision downloads nothing), iterations/s from the time stamps of the lines it
  prints per batch, after ``--warmup`` batches, against ``aigc-jax train dcgan-mnist --steps N`` (steps/s from the
  run's log after its first record; one step = one D and one G update at batch 64, as one iteration of theirs);
- ``sampling``: 500 new tokens after a 16-token prompt at batch 1 and 16 from a model of the ``-cpu`` shapes
  (4 layers, 4 heads, width 128, vocabulary 65) with a 1,024-token context, so that the tokens fit: nanoGPT's
  own ``GPT.generate`` (its ``model.py``, imported from the scratch copy; every token a forward pass over the
  sequence so far) against our ``GPT.generate`` with its KV cache (one jitted ``lax.scan``; compile excluded
  and reported). Untrained weights: the timing does not depend on them. Then the two trained ``-cpu`` models of
  the ``gpt`` part (context 64), where 500 tokens need a sliding window: nanoGPT's ``generate`` on its checkpoint
  against our ``generate(use_cache=False)`` on our run.

    python -m benchmarks.peers --out benchmarks/results/peers_cpu.json [--only gpt,dcgan,sampling]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._report import emit

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT.parent / "shared" / "peers"
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                "--log_interval=100", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
AIGC = str(Path(sys.executable).with_name("aigc-jax"))  # the console script a user runs


def _run(cmd, cwd, log: Path, env=None, stop=None) -> tuple[float, list[tuple[float, str]]]:
    """Run ``cmd``; return its wall time and its output lines with the time each arrived. ``stop(line)``: end
    the process once it returns True (the peer's remaining epochs are not needed)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
            out.write(line)
            if stop is not None and stop(line):
                proc.terminate()
                break
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0 and stop is None:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed (exit {rc}); see {log}")
    return wall, lines


def _ours(args: list[str], workdir: Path, log: Path, cache: Path) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    # Our cache folder (compiled programs, reference features) under the work directory: empty for a first run.
    wall, _ = _run([AIGC, "train", *args, "--workdir", str(workdir), "--no-progress"], ROOT, log,
                   env={"AIGC_JAX_CACHE": str(cache)})
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"][1:]  # the first record holds the compile
    evals = [r for r in records if r["kind"] == "eval"]
    sps = statistics.median(r["steps_per_sec"] for r in train)
    return {"command": f"aigc-jax train {' '.join(args)}", "wall_s": round(wall, 1), "steps_per_sec": round(sps, 2),
            "ms_per_step": round(1000 / sps, 2), "steps": records[-1]["step"],
            **({"val_loss": evals[-1]["loss"], "val_examples": evals[-1].get("examples")}
               if evals and "loss" in evals[-1] else {})}


def gpt(wd: Path) -> dict:
    peer = wd / "nanoGPT"
    shutil.rmtree(peer, ignore_errors=True)
    shutil.copytree(PEERS / "nanoGPT", peer)
    data = peer / "data" / "shakespeare_char"
    shutil.copy(ROOT / "data" / "tinyshakespeare" / "input.txt", data / "input.txt")
    _run([sys.executable, "prepare.py"], data, wd / "nanogpt_prepare.log")
    wall, lines = _run([sys.executable, "train.py", *NANOGPT_ARGS], peer, wd / "nanogpt_train.log")
    ms = [float(m.group(1)) for _, line in lines if (m := re.match(r"iter \d+: .* time ([\d.]+)ms", line))]
    vals = [float(m.group(1)) for _, line in lines if (m := re.match(r"step 2000: .* val loss ([\d.]+)", line))]
    theirs = {"command": "python train.py " + " ".join(NANOGPT_ARGS), "wall_s": round(wall, 1),
              "ms_per_iter_median": round(statistics.median(ms[1:]), 2), "val_loss_20_batches": vals[-1]}
    print(f"nanoGPT: {wall:.1f} s, {theirs['ms_per_iter_median']} ms/iter, val {vals[-1]}", flush=True)
    cache = wd / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    ours = _ours(["gpt-shakespeare-char-cpu"], wd / "ours-gpt", wd / "ours_gpt.log", cache)
    print(f"ours: {ours['wall_s']} s, {ours['ms_per_step']} ms/step, val {ours.get('val_loss')}", flush=True)
    # The same command again, as a user's second run: its compiled programs come from the persistent cache.
    again = _ours(["gpt-shakespeare-char-cpu"], wd / "ours-gpt-again", wd / "ours_gpt_again.log", cache)
    print(f"ours, second run: {again['wall_s']} s, val {again.get('val_loss')}", flush=True)
    return {"nanogpt": theirs, "ours": ours, "ours_second_run": again,
            "wall_ratio": round(ours["wall_s"] / theirs["wall_s"], 3),
            "wall_ratio_second_run": round(again["wall_s"] / theirs["wall_s"], 3),
            "speed_ratio_per_step": round(theirs["ms_per_iter_median"] / ours["ms_per_step"], 3)}


def dcgan(wd: Path, batches: int, warmup: int, steps: int) -> dict:
    peer = wd / "PyTorch-GAN"
    shutil.rmtree(peer, ignore_errors=True)
    shutil.copytree(PEERS / "PyTorch-GAN" / "implementations" / "dcgan", peer / "implementations" / "dcgan")
    raw = peer / "data" / "mnist" / "MNIST" / "raw"  # where its datasets.MNIST("../../data/mnist") looks
    raw.mkdir(parents=True)
    for gz in (ROOT / "data" / "mnist").glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    pattern = re.compile(r"\[Epoch 0/1\] \[Batch (\d+)/")
    _, lines = _run([sys.executable, "dcgan.py", "--n_epochs", "1"], peer / "implementations" / "dcgan",
                    wd / "pytorch_gan.log", stop=lambda line: bool((m := pattern.search(line))
                                                                   and int(m.group(1)) >= batches))
    stamps = [(t, int(m.group(1))) for t, line in lines if (m := pattern.search(line))]
    (t0, b0), (t1, b1) = next(s for s in stamps if s[1] >= warmup), stamps[-1]
    theirs = {"command": "python dcgan.py --n_epochs 1", "batch_size": 64,
              "iters_per_sec": round((b1 - b0) / (t1 - t0), 2), "timed_batches": [b0, b1]}
    print(f"PyTorch-GAN dcgan: {theirs['iters_per_sec']} it/s", flush=True)
    cache = wd / "cache-dcgan"
    shutil.rmtree(cache, ignore_errors=True)
    ours = _ours(["dcgan-mnist", "--steps", str(steps), "--set", "train.sample_every=0"], wd / "ours-dcgan",
                 wd / "ours_dcgan.log", cache)
    print(f"ours: {ours['steps_per_sec']} steps/s", flush=True)
    return {"pytorch_gan": theirs, "ours": ours,
            "speed_ratio": round(ours["steps_per_sec"] / theirs["iters_per_sec"], 3)}


def sampling(wd: Path, new: int) -> dict:
    import jax
    import numpy as np
    import torch

    from aigc_jax.models.autoregressive import GPT, GPTConfig

    sys.path.insert(0, str(wd / "nanoGPT"))  # the scratch copy made by the gpt part, or made here
    if not (wd / "nanoGPT").exists():
        shutil.copytree(PEERS / "nanoGPT", wd / "nanoGPT")
    import model as nanogpt  # nanoGPT's own model.py

    torch.manual_seed(0)
    theirs_model = nanogpt.GPT(nanogpt.GPTConfig(block_size=1024, vocab_size=65, n_layer=4, n_head=4, n_embd=128,
                                                 dropout=0.0, bias=False)).eval()
    ours_model = GPT(GPTConfig(vocab_size=65, context=1024, layers=4, heads=4, width=128, bias=False, temperature=1.0))
    params, _ = ours_model.init(jax.random.key(0))
    out = {"model": "4 layers, 4 heads, width 128, vocabulary 65, context 1024, untrained", "new_tokens": new,
           "prompt": 16, "batches": {}}
    for batch in (1, 16):
        idx = torch.randint(0, 65, (batch, 16))
        theirs_model.generate(idx, 8)  # warm-up
        t0 = time.perf_counter()
        theirs_model.generate(idx, new)
        t_theirs = time.perf_counter() - t0
        time.sleep(0.5)  # torch's OpenMP threads stop spinning before our timing
        prompt = jax.random.randint(jax.random.key(1), (batch, 16), 0, 65)
        t0 = time.perf_counter()
        fn = jax.jit(lambda p, pr, k: ours_model.generate(p, pr, k, new)).lower(params, prompt,
                                                                               jax.random.key(2)).compile()
        compile_s = time.perf_counter() - t0
        np.asarray(fn(params, prompt, jax.random.key(2)))
        t0 = time.perf_counter()
        np.asarray(fn(params, prompt, jax.random.key(3)))
        t_ours = time.perf_counter() - t0
        out["batches"][str(batch)] = {"nanogpt_tokens_per_sec": round(batch * new / t_theirs, 1),
                                      "ours_tokens_per_sec": round(batch * new / t_ours, 1),
                                      "ours_compile_s": round(compile_s, 2), "ratio": round(t_theirs / t_ours, 2)}
        print(f"sampling batch {batch}: {out['batches'][str(batch)]}", flush=True)
    out["trained_cpu_models"] = _trained_sampling(wd, new, nanogpt, torch)
    return out


def _trained_sampling(wd: Path, new: int, nanogpt, torch) -> dict:
    """The models the ``gpt`` part trained (context 64): 500 tokens need a sliding window past the context,
    nanoGPT's ``generate`` (a forward pass over the last 64 tokens per new token) against our
    ``generate(use_cache=False)`` (the same window, one jitted scan)."""
    import jax
    import numpy as np

    from aigc_jax.api import restore_run

    ckpt = wd / "nanoGPT" / "out-shakespeare-char" / "ckpt.pt"
    if not ckpt.is_file() or not (wd / "ours-gpt").is_dir():
        return {"skipped": "run the gpt part first"}
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    theirs = nanogpt.GPT(nanogpt.GPTConfig(**saved["model_args"]))
    theirs.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in saved["model"].items()})
    theirs.eval()
    setup, state, _ = restore_run(wd / "ours-gpt")
    model, params = setup.model, state["params"]
    out = {"model": f"the trained runs, context 64, our compute dtype {model.config.compute_dtype}", "batches": {}}
    for batch in (1, 16):
        idx = torch.randint(0, 65, (batch, 16))
        theirs.generate(idx, 8)
        t0 = time.perf_counter()
        theirs.generate(idx, new)
        t_theirs = time.perf_counter() - t0
        time.sleep(0.5)
        prompt = jax.random.randint(jax.random.key(1), (batch, 16), 0, 65)
        fn = jax.jit(lambda p, pr, k: model.generate(p, pr, k, new, use_cache=False)).lower(
            params, prompt, jax.random.key(2)).compile()
        np.asarray(fn(params, prompt, jax.random.key(2)))
        t0 = time.perf_counter()
        np.asarray(fn(params, prompt, jax.random.key(3)))
        t_ours = time.perf_counter() - t0
        out["batches"][str(batch)] = {"nanogpt_tokens_per_sec": round(batch * new / t_theirs, 1),
                                      "ours_tokens_per_sec": round(batch * new / t_ours, 1),
                                      "ratio": round(t_theirs / t_ours, 2)}
        print(f"trained models, sliding window, batch {batch}: {out['batches'][str(batch)]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/peers", help="scratch copies of the peers, their logs and our runs")
    ap.add_argument("--only", default="gpt,dcgan,sampling")
    ap.add_argument("--dcgan-batches", type=int, default=300, help="PyTorch-GAN batches to run")
    ap.add_argument("--warmup", type=int, default=50, help="PyTorch-GAN batches before the timing starts")
    ap.add_argument("--dcgan-steps", type=int, default=600, help="steps of our dcgan-mnist run")
    ap.add_argument("--new", type=int, default=500, help="new tokens per sample")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from aigc_jax.train.aot import quiet_libtpu_if_no_tpu

    quiet_libtpu_if_no_tpu()  # before JAX starts in this process (the sampling part)
    if not PEERS.is_dir():
        raise SystemExit(f"the peers are not at {PEERS} (../shared/peers beside the repository)")
    wd = Path(args.workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    result: dict = {"benchmark": "peers", "torch_threads": None}
    if "gpt" in parts:
        result["gpt"] = gpt(wd)
    if "dcgan" in parts:
        result["dcgan"] = dcgan(wd, args.dcgan_batches, args.warmup, args.dcgan_steps)
    if "sampling" in parts:
        result["sampling"] = sampling(wd, args.new)
    import torch

    result["torch_threads"] = torch.get_num_threads()
    result["torch"] = torch.__version__
    result["command"] = "python -m benchmarks.peers " + " ".join(sys.argv[1:])
    # Both sides inherit this shell's environment; OpenMP's wait policy changes torch's speed (benchmarks/README.md).
    result["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    emit(result, args.out)


if __name__ == "__main__":
    main()
