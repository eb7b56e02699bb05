"""Pretrain, then fine-tune on a little held-out text: the `gpt-shakespeare-char-cpu` model on Tiny Shakespeare.

The held-out part is every speech of one character (``--character``, default DUKE VINCENTIO, the second-largest
part, 37k characters of Measure for Measure); the model pretrains on every other speech with the recipe of the
``-cpu`` config (2,000 steps), then each fine-tuning run trains for the same ``--steps`` on the first
``--slice`` of the character's speeches and is validated on the rest (the whole remainder, non-overlapping
windows):

- ``pretrained``: no fine-tuning;
- ``full``: every parameter (``--init-from``);
- ``lora``: rank-4 adapters on the attention and MLP projections (``--init-from ... --lora 4``);
- ``last_layers``: the last block and the final norm only (``--freeze`` the embeddings and the other blocks);
- ``scratch``: the same model from a fresh initialisation.

Byte tokens (vocabulary 256), so that every text has the same token ids. The recipe's AdamW, with a 20-step
warm-up and cosine decay over the fine-tuning steps: learning rate ``--lr`` for full, last-layers and scratch,
``--lora-lr`` for LoRA (adapters start at zero and take the larger rate, as Hu et al. 2021 do).

    python -m benchmarks.pipeline_text --out benchmarks/results/pipeline_text.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks._report import emit

EXPERIMENT = "gpt-shakespeare-char-cpu"


def split_corpus(text: str, character: str) -> tuple[str, str]:
    """(every other speech, the character's speeches), each in the corpus order; speeches are blank-line
    separated blocks whose first line is ``NAME:``."""
    mine, rest = [], []
    for speech in text.split("\n\n"):
        (mine if speech.split("\n", 1)[0] == f"{character}:" else rest).append(speech)
    if not mine:
        raise SystemExit(f"no speech of {character!r} in the corpus")
    return "\n\n".join(rest) + "\n", "\n\n".join(mine) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/pipeline-text", help="where the corpora and runs go")
    ap.add_argument("--character", default="DUKE VINCENTIO")
    ap.add_argument("--slice", type=float, default=0.2, help="fraction of the character's text to fine-tune on")
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=200, help="fine-tuning steps (every run)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lora-lr", type=float, default=2e-3)
    ap.add_argument("--lora-rank", type=int, default=4)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from aigc_jax.train.aot import quiet_libtpu_if_no_tpu

    quiet_libtpu_if_no_tpu()  # before JAX starts: no libtpu warnings on a host without a TPU
    from aigc_jax.api import get_config, restore_run
    from aigc_jax.data.embedded import verified
    from aigc_jax.train.evaluation import evaluate
    from aigc_jax.train.loop import train
    from aigc_jax.train.setup import build_setup

    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    rest, mine = split_corpus(verified("tinyshakespeare/input.txt").read_text(encoding="utf-8"), args.character)
    (wd / "pretrain.txt").write_text(rest, encoding="utf-8")
    (wd / "heldout.txt").write_text(mine, encoding="utf-8")
    model = ["model.vocab_size=256", "data.tokenizer=byte", "train.sample_every=0", "train.eval_every=50",
             "train.log_every=50"]
    tune = [*model, f"data.name={wd / 'heldout.txt'}", f"data.train_fraction={args.slice}",
            f"train.steps={args.steps}", "train.checkpoint_every=100000", "players.gpt.optim.warmup_steps=20",
            "players.gpt.optim.final_lr=0.0"]
    runs: dict = {}

    def run(name, overrides):
        t0 = time.perf_counter()
        summary = train(get_config(EXPERIMENT, overrides), wd / name, progress=False)
        shown = [o.replace(str(wd), "{workdir}") for o in overrides]  # no path of this machine in the JSON
        runs[name] = {"val_loss": summary["eval"]["loss"], "val_tokens": summary["eval"]["examples"] * 64,
                      "wall_s": round(time.perf_counter() - t0, 1), "overrides": shown,
                      **({"parameters": summary["parameters"]} if "parameters" in summary else {})}
        records = [json.loads(line) for line in (wd / name / "metrics.jsonl").read_text().splitlines()]
        runs[name]["curve"] = [[r["step"], r["loss"]] for r in records if r["kind"] == "eval"]
        print(f"{name}: validation loss {runs[name]['val_loss']:.4f}", flush=True)

    run("pretrain", [*model, f"data.name={wd / 'pretrain.txt'}", f"train.steps={args.pretrain_steps}",
                     "train.eval_every=0"])
    # The pretrained model with no fine-tuning, on the same validation windows.
    setup = build_setup(get_config(EXPERIMENT, tune), for_training=False)
    _, state, _ = restore_run(wd / "pretrain")
    m = evaluate(setup, state, max_batches=0)
    runs["pretrained"] = {"val_loss": m["loss"], "val_tokens": m["examples"] * 64}
    print(f"pretrained: validation loss {m['loss']:.4f}", flush=True)
    src = f"train.init_from={wd / 'pretrain'}"
    run("full", [*tune, src, f"players.gpt.optim.lr={args.lr}"])
    run("lora", [*tune, src, f"train.lora={args.lora_rank}", f"players.gpt.optim.lr={args.lora_lr}"])
    layers = get_config(EXPERIMENT).model.layers
    frozen = f"players.gpt.optim.freeze=gpt/(wte|wpe|blocks/[0-{layers - 2}]/.*)"
    run("last_layers", [*tune, src, frozen, f"players.gpt.optim.lr={args.lr}"])
    run("scratch", [*tune, f"players.gpt.optim.lr={args.lr}"])
    run("scratch_lr1e-3", [*tune, "players.gpt.optim.lr=1e-3"])  # the recipe's own rate, for a fair scratch run
    emit({"benchmark": "pipeline_text", "experiment": EXPERIMENT, "character": args.character,
          "pretrain_chars": len(rest), "heldout_chars": len(mine), "slice": args.slice,
          "finetune_steps": args.steps, "pretrain_steps": args.pretrain_steps, "runs": runs,
          "command": "python -m benchmarks.pipeline_text --out benchmarks/results/pipeline_text.json"}, args.out)


if __name__ == "__main__":
    main()
