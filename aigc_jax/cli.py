"""The ``aigc-jax`` command line: list, train, sample, eval.

Thin on purpose: it parses flags and calls the Python API. Every user mistake ends as one line on stderr and exit
status 2 (or 1 for a run that failed, e.g. a NaN loss), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise _CLIError(f"{self.prog}: {message}")


class _CLIError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="aigc-jax", description="Generative models in JAX, trained by one sharded trainer.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, required=True)

    sub.add_parser("list", help="registered experiments: name, family, dataset, parameter count")

    t = sub.add_parser("train", help="train an experiment (resumes when the workdir holds a checkpoint)")
    t.add_argument("experiment")
    t.add_argument("--workdir", help="run directory (default: runs/EXPERIMENT)")
    t.add_argument("--steps", type=int, help="total number of training steps (overrides train.steps)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set players.vae.optim.lr=3e-4 (repeatable)")
    t.add_argument("--mesh", help="device mesh, e.g. data=4,fsdp=2 (default: every device on data)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="samples from a trained run: a PNG grid of images, or text printed")
    s.add_argument("workdir")
    s.add_argument("--num", type=int, default=None, help="number of samples (default: 64 images, 1 text)")
    s.add_argument("--out", help="output file: .png for image models (required), .txt for text models (optional)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, help="class label, for conditional models")
    s.add_argument("--prompt", help="text models: the text to continue (default: a newline)")
    s.add_argument("--tokens", type=int, help="text models: new tokens to generate (default: model.sample_tokens)")
    s.add_argument("--temperature", type=float, help="text models: sampling temperature (0: greedy)")
    s.add_argument("--top-k", type=int, help="text models: keep the k most likely tokens (0: all)")
    s.add_argument("--top-p", type=float, help="text models: nucleus sampling mass (1: off)")
    s.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    s.add_argument("--input", metavar="PATH",
                   help="image-to-image models: translate this .png/.jpg or .npz (array x) instead of test images")
    s.add_argument("--split", choices=("test", "train"),
                   help="image-to-image models: translate the first --num images of this split (default: test)")

    e = sub.add_parser("eval", help="evaluate a trained run on the test split; writes WORKDIR/eval.json")
    e.add_argument("workdir")
    e.add_argument("--metrics", default="",
                   help="comma-separated subset of: loss (the model's own test metrics, e.g. -ELBO or token NLL), "
                        "nll (importance-weighted, VAEs), and for image models fid, kid, is, pr (precision/recall), "
                        "label_accuracy (conditional models) on generated samples (default: loss,nll for "
                        "likelihood models, the sample metrics for GANs)")
    e.add_argument("--num-samples", type=int, default=0,
                   help="loss/nll: test examples to use (default: the whole split); sample metrics: generated "
                        "samples (default: 10000)")
    e.add_argument("--extractor", default="",
                   help="feature extractor for sample metrics: lenet-mnist or inception-v3 (default: lenet-mnist "
                        "for 28x28 grayscale data, inception-v3 otherwise)")
    e.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth for inception-v3 (or set AIGC_JAX_INCEPTION_WEIGHTS); "
                        "nothing is downloaded")
    e.add_argument("--iwae-k", type=int, default=0, help="importance samples for nll (default: model.iwae_samples)")
    e.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    e.add_argument("--no-progress", action="store_true")
    return p


def _cmd_list(args) -> int:
    from aigc_jax.api import list_models

    rows = list_models()
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  {'family':<14}  {'dataset':<12}  {'params':>12}")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['family']:<14}  {r['dataset']:<12}  {r['params']:>12,}")
    return 0


def _cmd_train(args) -> int:
    from aigc_jax.api import get_config
    from aigc_jax.parallel import initialize_distributed
    from aigc_jax.train.loop import train

    initialize_distributed()
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.mesh is not None:
        overrides.append(f"mesh={args.mesh}")
    cfg = get_config(args.experiment, overrides)
    workdir = Path(args.workdir or os.path.join("runs", args.experiment))
    summary = train(cfg, workdir, progress=not args.no_progress)
    if "message" in summary:
        print(summary["message"])
        return 0
    ev = summary.get("eval", {})
    shown = ", ".join(f"{k}={v:.4g}" for k, v in ev.items())
    print(f"trained {cfg.name} to step {summary['step']} in {workdir}" + (f"; test {shown}" if shown else ""))
    return 0


def _cmd_sample(args) -> int:
    import jax
    import numpy as np

    from aigc_jax.api import restore_run
    from aigc_jax.core.contract import sampling_params
    from aigc_jax.core.errors import UserError
    from aigc_jax.train.writers import save_grid

    if args.num is not None and args.num < 1:
        raise UserError(f"--num {args.num}: expected a positive integer")
    setup, state, step = restore_run(args.workdir, step=args.step)
    if getattr(setup.model, "sample_kind", "image") == "text":
        return _sample_text(args, setup, state, step)
    text_flags = [f for f in ("prompt", "tokens", "temperature", "top_k", "top_p") if getattr(args, f) is not None]
    if text_flags:
        raise UserError(f"--{text_flags[0].replace('_', '-')} is for text models; {setup.config.name} makes images")
    if args.out is None or not args.out.lower().endswith(".png"):
        raise UserError(f"--out {args.out}: expected a .png file name")
    num_given = args.num is not None
    args.num = 64 if args.num is None else args.num
    paired = hasattr(setup.model, "grid_images")  # an image-to-image model: it translates inputs
    if not paired and (args.input is not None or args.split is not None):
        raise UserError(f"--{'input' if args.input is not None else 'split'} is for image-to-image models; "
                        f"{setup.config.name} samples from noise")
    ncls = getattr(setup.config.model, "num_classes", 0)
    cond = {}
    if args.label is not None:
        if not ncls:
            raise UserError(f"--label: {setup.config.name} is not a conditional model")
        if not 0 <= args.label < ncls:
            raise UserError(f"--label {args.label}: expected a class in 0..{ncls - 1}")
        cond["label"] = args.label
    elif ncls:
        cond = setup.model.sample_conditions(args.num)
    if paired:
        from aigc_jax.train.loop import panel_images
        from aigc_jax.train.writers import save_panels

        if args.input is None:
            panels = panel_images(setup, state, args.num, args.seed, split=args.split or "test")
            out = save_panels(panels, args.out)
            print(f"wrote input | output | target of {len(panels)} {args.split or 'test'} images from {args.workdir} "
                  f"(step {step}) to {out}")
            return 0
        from aigc_jax.data.images import read_images

        if args.split is not None or num_given:
            raise UserError(f"--{'split' if args.split is not None else 'num'}: with --input the images are those "
                            f"of {args.input}")
        x = np.asarray(setup.model.input_from_images(read_images(args.input)))
        params = sampling_params(setup.model, state["params"], state["model_state"])
        fn = jax.jit(lambda p, k, c: setup.model.sample(p, k, len(x), input=c))
        y = np.asarray(fn(params, jax.random.key(args.seed), x))
        out = save_panels(np.stack([np.broadcast_to(x, y.shape), y], axis=1), args.out)
        print(f"wrote input | output of {len(x)} images from {args.input} ({args.workdir}, step {step}) to {out}")
        return 0
    fn = jax.jit(lambda p, k, c: setup.model.sample(p, k, args.num, **c))
    params = sampling_params(setup.model, state["params"], state["model_state"])
    images = np.asarray(fn(params, jax.random.key(args.seed), cond))
    out = save_grid(images, args.out)
    print(f"wrote {args.num} samples from {args.workdir} (step {step}) to {out}")
    return 0


def _sample_text(args, setup, state, step) -> int:
    import jax
    import numpy as np

    from aigc_jax.core.errors import UserError
    from aigc_jax.data.text import default_prompt, tokenizer_from_json

    cfg = setup.config.model
    tok_path = Path(args.workdir) / "tokenizer.json"
    if not tok_path.is_file():
        raise UserError(f"{args.workdir} has no tokenizer.json (it is written when training starts)")
    tokenizer = tokenizer_from_json(json.loads(tok_path.read_text()))
    if args.out is not None and not args.out.lower().endswith(".txt"):
        raise UserError(f"--out {args.out}: text models write a .txt file")
    if args.prompt == "":
        raise UserError("--prompt must not be empty")
    prompt = default_prompt(tokenizer) if args.prompt is None else tokenizer.encode(args.prompt)
    n_new = cfg.sample_tokens if args.tokens is None else args.tokens
    if n_new < 1:
        raise UserError(f"--tokens {n_new}: expected a positive integer")
    if args.top_k is not None and args.top_k < 0:
        raise UserError(f"--top-k {args.top_k}: expected 0 (off) or a positive integer")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top-p {args.top_p}: expected a number in (0, 1]")
    if args.temperature is not None and args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: expected a number >= 0")
    num = 1 if args.num is None else args.num
    use_cache = len(prompt) + n_new <= cfg.context
    kw = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    fn = jax.jit(lambda p, pr, k: setup.model.generate(p, pr, k, n_new, use_cache=use_cache, **kw))
    prompts = np.broadcast_to(prompt[None], (num, len(prompt)))
    out = np.asarray(fn(state["params"], prompts, jax.random.key(args.seed)))
    texts = [tokenizer.decode(row) for row in out]
    joined = "\n\n---\n\n".join(texts)
    if args.out:
        Path(args.out).write_text(joined)
        print(f"wrote {num} samples from {args.workdir} (step {step}) to {args.out}")
    else:
        print(joined)
    return 0


def _cmd_eval(args) -> int:
    from aigc_jax.api import restore_run
    from aigc_jax.core.errors import UserError
    from aigc_jax.metrics import importance_weighted_nll
    from aigc_jax.metrics.sample_quality import SAMPLE_METRICS, default_extractor, evaluate_samples
    from aigc_jax.train.loop import _write_json, evaluate

    setup, state, step = restore_run(args.workdir, step=args.step)
    model = setup.model
    # "nll" is the importance-weighted estimate for latent-variable models; for exact-likelihood models (PixelCNN)
    # the model's own "loss" metric is already the exact NLL.
    available = ["loss"] + (["nll"] if hasattr(model, "log_prob") and hasattr(model, "encode") else [])
    # Sample metrics are for models that sample from noise; an image-to-image model (pix2pix) is measured by its
    # test L1 against the targets ("loss").
    is_image = getattr(model, "sample_kind", "image") == "image" and not hasattr(model, "grid_images")
    conditional = bool(getattr(setup.config.model, "num_classes", 0))
    sample_metrics = [m for m in SAMPLE_METRICS if m != "label_accuracy" or conditional] if is_image else []
    available += sample_metrics
    default = getattr(model, "default_metrics", None)
    default = list(default) if default is not None else [m for m in available if m not in SAMPLE_METRICS]
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] or default
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise UserError(f"--metrics: {','.join(unknown)} not available for {setup.config.name}; "
                        f"expected a subset of {','.join(available)}")
    if args.num_samples < 0 or args.iwae_k < 0:
        raise UserError("--num-samples and --iwae-k must be positive (0: the defaults)")
    cfg = setup.config
    result: dict = {"experiment": cfg.name, "step": step, "split": "test", "dataset": cfg.data.name}
    if getattr(model, "sample_kind", "image") == "image":
        result["binarize"] = cfg.data.binarize
    bs = cfg.data.eval_batch_size
    if "loss" in wanted:
        result.update({f"test_{k}": v for k, v in evaluate(setup, state, max_batches=0, seed=cfg.train.seed,
                                                           max_examples=args.num_samples).items()})
    if "test_loss" in result and getattr(model, "sample_kind", "image") == "image" and hasattr(model, "log_prob"):
        import math

        # A VAE's loss may weight its KL (beta-VAE); its bound on -log p(x) is -ELBO.
        nll = result.get("test_neg_elbo", result["test_loss"])
        result["test_bits_per_dim"] = nll / (math.log(2) * math.prod(cfg.model.image_shape))
    if "test_loss" in result and getattr(model, "sample_kind", "image") == "text":
        import math

        result["test_bits_per_token"] = result["test_loss"] / math.log(2)
        result["test_perplexity"] = math.exp(result["test_loss"])
    if "nll" in wanted:
        k = args.iwae_k or cfg.model.iwae_samples
        chunk = min(cfg.model.iwae_chunk, k)
        if k % chunk:
            raise UserError(f"--iwae-k {k}: expected a multiple of model.iwae_chunk={chunk}")
        result.update(importance_weighted_nll(setup, state, k, max_examples=args.num_samples,
                                              batch_size=min(bs, 200), seed=cfg.train.seed,
                                              progress=not args.no_progress))
    wanted_samples = tuple(m for m in wanted if m in SAMPLE_METRICS)
    if wanted_samples:
        name = args.extractor or default_extractor(getattr(cfg.model, "image_shape", ()))
        if args.inception_weights and name != "inception-v3":
            raise UserError(f"--inception-weights is for the inception-v3 extractor; this evaluation uses {name} "
                            "(choose it with --extractor inception-v3)")
        options = {"weights": args.inception_weights} if args.inception_weights else {}
        result.update(evaluate_samples(setup, state, wanted_samples, extractor=name,
                                       num_samples=args.num_samples or 10_000, extractor_options=options,
                                       seed=cfg.train.seed, batch_size=min(bs, 500),
                                       progress=not args.no_progress))
    out = Path(args.workdir) / "eval.json"
    _write_json(out, result)
    for k, v in result.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from aigc_jax.core.errors import NonFiniteLossError, UserError

    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)  # Orbax's informational warnings are not for users
    except ImportError:  # pragma: no cover
        pass
    try:
        args = _parser().parse_args(argv)
        return {"list": _cmd_list, "train": _cmd_train, "sample": _cmd_sample, "eval": _cmd_eval}[args.command](args)
    except _CLIError as e:
        print(str(e), file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"aigc-jax: error: {e}", file=sys.stderr)
        return 1
    except UserError as e:
        print(f"aigc-jax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aigc-jax: interrupted; the last step was checkpointed, run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
