"""Pretrain without labels, then fine-tune into a class-conditional generator with 1,000 labels: `dcgan-mnist`.

- ``pretrain``: `dcgan-mnist` as it is (unconditional, no label input anywhere) on all 60,000 MNIST training
  images, ``--pretrain-steps`` steps;
- ``finetuned``: the same networks made class-conditional (``model.num_classes=10``: a label embedding added to
  the generator's first layer, a projection term in the discriminator, Miyato & Koyama 2018) started with
  ``--init-from`` the pretrained run: every weight is restored by path and the two label inputs are the new
  parameters (the generator's ``label_embed``, the discriminator's ``embed``), trained ``--steps`` steps with
  fresh Adam states on the 1,000 labelled images;
- ``scratch``: the same conditional model from a fresh initialisation, the same ``--steps`` on the same images;
- ``scratch_cgan``: `cgan-mnist` from scratch on the same images and steps, the zoo's recipe made for conditional
  training (spectral norm, hinge loss, minibatch-std feature): a from-scratch baseline that is not the pretrained
  model's recipe.

The 1,000 labelled images are the first 100 of each digit in the MNIST training split (written with the full
test split to an ``.npz`` in the work directory, the dataset of both conditional runs). Each run is evaluated by
``aigc_jax.evaluate`` on 10,000 samples from the generator's moving average (an equal number per label for the
conditional ones): lenet-mnist label accuracy, FID, KID, IS and precision/recall against the 10,000 test images.

    python -m benchmarks.pipeline_images --out benchmarks/results/pipeline_images.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks._report import emit

EXPERIMENT = "dcgan-mnist"
CONDITIONAL = "model.num_classes=10"
METRICS = ("fid", "kid", "is", "pr")
RUNS = ("pretrain", "finetuned", "scratch", "scratch_cgan")


def labelled_subset(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` examples of each class, in the split's order."""
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    return np.sort(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/pipeline-images", help="where the labelled subset and runs go")
    ap.add_argument("--per-class", type=int, default=100, help="labelled images per digit")
    ap.add_argument("--pretrain-steps", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=3000, help="conditional training steps (both runs)")
    ap.add_argument("--num-samples", type=int, default=10_000)
    ap.add_argument("--runs", default=",".join(RUNS), help="which runs (others are kept from --out's JSON)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]

    from aigc_jax.train.aot import quiet_libtpu_if_no_tpu

    quiet_libtpu_if_no_tpu()
    import aigc_jax
    from aigc_jax.data.sources import load_mnist

    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    train_split, test_split = load_mnist("train"), load_mnist("test")
    idx = labelled_subset(train_split.labels, args.per_class)
    subset = wd / "mnist_labelled.npz"
    np.savez(subset, x_train=train_split.images[idx], y_train=train_split.labels[idx], x_test=test_split.images,
             y_test=test_split.labels)
    every = ["train.sample_every=0", "train.eval_every=0"]
    runs: dict = {}

    def run(name, overrides, metrics, experiment=EXPERIMENT):
        if name not in wanted:
            return
        t0 = time.perf_counter()
        aigc_jax.train(experiment, wd / name, overrides=overrides, progress=False)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = aigc_jax.evaluate(wd / name, ",".join(metrics), num_samples=args.num_samples, progress=False)
        shown = [o.replace(str(wd), "{workdir}") for o in overrides]  # no path of this machine in the JSON
        result = json.loads(json.dumps(result).replace(str(wd.resolve()), "{workdir}").replace(str(wd), "{workdir}"))
        runs[name] = {"experiment": experiment, "train_wall_s": round(train_s, 1),
                      "eval_wall_s": round(time.perf_counter() - t0, 1), "overrides": shown, "eval": result}
        print(f"{name}: " + ", ".join(f"{k} {result[k]:.4g}" for k in ("fid", "is_mean", "label_accuracy")
                                      if k in result), flush=True)

    run("pretrain", [f"train.steps={args.pretrain_steps}", *every], METRICS)
    tune = [CONDITIONAL, f"data.name={subset}", f"train.steps={args.steps}", *every]
    run("finetuned", [*tune, f"train.init_from={wd / 'pretrain'}"], (*METRICS, "label_accuracy"))
    run("scratch", tune, (*METRICS, "label_accuracy"))
    run("scratch_cgan", tune[1:], (*METRICS, "label_accuracy"), experiment="cgan-mnist")
    init = json.loads((wd / "finetuned" / "config.json").read_text()).get("init_from", {})
    if set(wanted) != set(RUNS) and args.out and Path(args.out).is_file():  # add these runs to the earlier ones
        runs = {**json.loads(Path(args.out).read_text())["runs"], **runs}
    emit({"benchmark": "pipeline_images", "experiment": EXPERIMENT, "labelled_images": int(len(idx)),
          "per_class": args.per_class, "pretrain_images": int(len(train_split)),
          "pretrain_steps": args.pretrain_steps, "steps": args.steps, "num_samples": args.num_samples,
          "fresh_parameters": init.get("fresh", []), "runs": runs,
          "command": "python -m benchmarks.pipeline_images --out benchmarks/results/pipeline_images.json"},
         args.out)


if __name__ == "__main__":
    main()
