"""Populations and their ensembles: a 5-member `vae-mnist` and a 4-member `gpt-shakespeare-char-cpu`, each trained
by ``aigc-jax train EXP --population K`` (one compiled program, member i with seed i; the experiment's recipe,
the VAE's shortened to 5 epochs), then ``aigc-jax eval RUN --ensemble``: every member's likelihood, the mean,
sd and 95% interval, and the members' mixture (log-mean-exp over members of the IWAE estimate for the VAE; of
the next-token distributions for the GPT).

    python -m benchmarks.ensembles --out benchmarks/results/ensembles.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks._report import emit

RUNS = {  # experiment: (members, metrics, importance samples, overrides)
    # 5 of the recipe's 50 epochs: five members run at ~9 steps/s here (0.63x a single run's member-steps/s),
    # so the full recipe would take 43 minutes.
    "vae-mnist": (5, "loss,nll", 100, ["train.steps=2340"]),
    "gpt-shakespeare-char-cpu": (4, "loss,nll", 0, []),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/ensembles")
    ap.add_argument("--only", default="", help="one experiment of " + ", ".join(RUNS))
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from aigc_jax.train.aot import quiet_libtpu_if_no_tpu

    quiet_libtpu_if_no_tpu()
    import aigc_jax

    out = {}
    for name, (k, metrics, iw, extra) in RUNS.items():
        if args.only and name != args.only:
            continue
        wd = Path(args.workdir) / name
        t0 = time.perf_counter()
        overrides = [f"train.population={k}", "train.sample_every=0", *extra]
        aigc_jax.train(name, wd, overrides=overrides, progress=False)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = aigc_jax.evaluate(wd, metrics, importance_samples=iw, ensemble=True, progress=False)
        out[name] = {"population": k, "train_wall_s": round(train_s, 1),
                     "eval_wall_s": round(time.perf_counter() - t0, 1), "eval": result,
                     "overrides": overrides,
                     "command": f"aigc-jax train {name} --population {k}"
                                + "".join(f" --set {o}" for o in extra) + f" && aigc-jax eval RUN --metrics {metrics}"
                                + (f" --importance-samples {iw}" if iw else "") + " --ensemble"}
        print(f"{name}: trained {k} members in {train_s:.0f} s", flush=True)
    emit({"benchmark": "ensembles", "runs": out,
          "command": "python -m benchmarks.ensembles --out benchmarks/results/ensembles.json"}, args.out)


if __name__ == "__main__":
    main()
