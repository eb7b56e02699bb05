"""The ``aigc-jax`` command line: list, train, sample, compile, bench, average, eval, export.

Thin on purpose: it parses flags and calls the Python API. Every user mistake ends as one line on stderr and exit
status 2 (or 1 for a run that failed, e.g. a NaN loss), never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise _CLIError(f"{self.prog}: {message}")


class _CLIError(Exception):
    pass


class _Terminated(BaseException):
    """SIGTERM outside training (start-up, sample, eval): stop like Ctrl-C, with exit status 143."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _add_sampler_flags(p) -> None:
    """The sampler settings of diffusion and flow models (any declared setting through --setting)."""
    p.add_argument("--steps", type=int, help="diffusion/flow models: sampler steps (default: the model's)")
    p.add_argument("--sampler", help="diffusion/flow models: ddim, ddpm (ancestral), euler or heun (flow)")
    p.add_argument("--guidance", type=float, help="conditional diffusion/flow models: classifier-free guidance "
                                                  "weight (0 unconditional, 1 conditional)")
    p.add_argument("--eta", type=float, help="diffusion/flow models: the ddim sampler's stochasticity (0..1)")
    p.add_argument("--setting", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="any sampler setting the model declares (repeatable)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="aigc-jax", description="Generative models in JAX, trained by one sharded trainer.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, required=True)

    sub.add_parser("list", help="registered experiments: name, family, dataset, parameter count")

    t = sub.add_parser("train", help="train an experiment (resumes when the workdir holds a checkpoint)")
    t.add_argument("experiment")
    t.add_argument("--workdir", help="run directory (default: runs/EXPERIMENT)")
    t.add_argument("--steps", type=int, help="total number of training steps (overrides train.steps)")
    t.add_argument("--population", type=int, metavar="K",
                   help="train K members in one compiled program, member i with seed train.seed + i (sets "
                        "train.population; train.population_mode=vmap|loop)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.steps=200 or players.NAME.optim.lr=3e-4 "
                        "(repeatable)")
    t.add_argument("--mesh", help="device mesh, e.g. data=4,fsdp=2 (default: every device on data)")
    t.add_argument("--init-from", metavar="RUN_DIR[@STEP]",
                   help="start from another run's weights, matched by path (new parameters start fresh; the "
                        "optimizer starts fresh); sets train.init_from")
    t.add_argument("--lora", metavar="RANK[:REGEX]",
                   help="train LoRA adapters of rank RANK on the attention, dense and convolution weights whose path "
                        "fully matches REGEX (default: all), the rest frozen; scale train.lora_alpha / RANK; sets "
                        "train.lora")
    t.add_argument("--freeze", metavar="REGEX",
                   help="freeze the parameters whose path (PLAYER/keys, e.g. 'gpt/blocks/0/.*') fully matches REGEX "
                        "(every player's players.NAME.optim.freeze)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-fast-defaults", action="store_true",
                   help="on a CPU, keep one XLA device and the experiment's precision (default: for models that "
                        "run faster so, one device per core with the batch split across them, and bfloat16 compute "
                        "where the CPU has native bfloat16 and the model offers it; also AIGC_JAX_FAST_DEFAULTS=0)")

    s = sub.add_parser("sample", help="samples from a trained run: a PNG grid of images, or text printed")
    s.add_argument("workdir")
    s.add_argument("--num", type=int, default=None, help="number of samples (default: 64 images, 1 text)")
    s.add_argument("--out", help="output file: .png for image models (required), .txt for text models (optional)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, help="class label, for conditional models")
    s.add_argument("--prompt", help="text models: the text to continue (default: a newline)")
    s.add_argument("--tokens", type=int, help="text models: new tokens to generate (default: the model's)")
    s.add_argument("--temperature", type=float, help="text models: sampling temperature (0: greedy)")
    s.add_argument("--top-k", type=int, help="text models: keep the k most likely tokens (0: all)")
    s.add_argument("--top-p", type=float, help="text models: nucleus sampling mass (1: off)")
    s.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    _add_sampler_flags(s)
    s.add_argument("--input", metavar="PATH",
                   help="image-to-image models: translate this .png/.jpg or .npz (array x) instead of test images")
    s.add_argument("--split", choices=("test", "train"),
                   help="image-to-image models: translate the first --num images of this split (default: test)")

    c = sub.add_parser("compile", help="compile an experiment's sharded train step and sampler from shapes, for "
                                       "this host or a TPU topology, and report memory, FLOPs, collectives and a "
                                       "roofline")
    c.add_argument("experiment")
    c.add_argument("--topology", metavar="SLICE",
                   help="TPU slice to compile for without one attached: a slice name (v5p-8, v5p-64, v5p-256, ...; "
                        "the number counts TensorCores, two per chip) or GENERATION:AxBxC (v5p:4x4x4); needs libtpu "
                        "(pip install 'aigc-jax[tpu]'). Default: this host's devices")
    c.add_argument("--mesh", help="device mesh over the topology's chips, e.g. fsdp=16,tensor=4 (default: every "
                                  "chip on data)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set data.batch_size=256")
    c.add_argument("--no-sampler", action="store_true", help="compile only the train step")
    c.add_argument("--json", action="store_true", help="print the report as JSON")

    b = sub.add_parser("bench", help="steps/s, examples/s, compile time and MFU of experiments' default train "
                                     "steps on this machine (the fast defaults train would use), against a matmul "
                                     "peak measured in the same run")
    b.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="default: every registered experiment")
    b.add_argument("--seconds", type=float, default=10.0, help="timed seconds per experiment (at least 3 steps; "
                                                               "default 10)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field in every experiment (repeatable)")
    b.add_argument("--no-fast-defaults", action="store_true", help="one XLA device and the experiments' precision")
    b.add_argument("--out", metavar="FILE.json", help="also write the JSON here (not overwritten if it exists)")
    b.add_argument("--json", action="store_true", help="print the JSON instead of the table")

    a = sub.add_parser("average", help="average a run's last K checkpoints into a new run directory (for eval, "
                                       "sample, load and --init-from)")
    a.add_argument("workdir")
    a.add_argument("--last", type=int, required=True, metavar="K", help="how many of the latest checkpoints")
    a.add_argument("--out", required=True, metavar="RUN_DIR", help="the new run directory (must not exist)")

    x = sub.add_parser("export", help="write a run's sampler as a jax.export artifact that runs with JAX alone "
                                      "(OUT_DIR/sample.jaxexport + manifest.json)")
    x.add_argument("workdir")
    x.add_argument("out_dir", help="a new or empty folder")
    x.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    x.add_argument("--member", type=int, help="which member of a population")
    x.add_argument("--prompt-length", type=int, help="token models: the prompt input's length (default 1)")
    x.add_argument("--platforms", default="cpu,cuda,tpu", help="comma-separated lowering platforms "
                                                               "(default: cpu,cuda,tpu)")
    _add_sampler_flags(x)

    e = sub.add_parser("eval", help="evaluate a trained run on the test split; writes WORKDIR/eval.json")
    e.add_argument("workdir")
    e.add_argument("--metrics", default="",
                   help="comma-separated subset of the metrics the model declares: loss (its own test metrics, e.g. "
                        "-ELBO, token NLL, L1), nll (from its likelihood, with bits/dim), and for image generators "
                        "fid, kid, is, pr (precision/recall), label_accuracy (conditional models) on generated "
                        "samples (default: the model's declared default)")
    e.add_argument("--num-samples", type=int, default=0,
                   help="loss/nll: test examples to use (default: the whole split); sample metrics: generated "
                        "samples (default: 10000)")
    e.add_argument("--extractor", default="",
                   help="feature extractor for sample metrics: lenet-mnist or inception-v3 (default: lenet-mnist "
                        "for 28x28 grayscale data, inception-v3 otherwise)")
    e.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth for inception-v3 (or set AIGC_JAX_INCEPTION_WEIGHTS); "
                        "nothing is downloaded")
    e.add_argument("--importance-samples", type=int, default=0, metavar="K",
                   help="importance samples for the nll of latent-variable models (default: the model's)")
    e.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    _add_sampler_flags(e)
    e.add_argument("--ensemble", action="store_true",
                   help="a population's ensemble beside its best and mean member: the mixture likelihood for nll "
                        "(log-mean-exp over members; next-token for GPTs), the samples of the members' mixture "
                        "for fid/kid/is/pr/label_accuracy")
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
    if args.init_from is not None:
        overrides.append(f"train.init_from={args.init_from}")
    if args.population is not None:
        overrides.append(f"train.population={args.population}")
    if args.lora is not None:
        overrides.append(f"train.lora={args.lora}")
    cfg = get_config(args.experiment, overrides)
    if args.freeze is not None:
        overrides += _freeze_overrides(cfg, args.freeze)
        cfg = get_config(args.experiment, overrides)
    workdir = Path(args.workdir or os.path.join("runs", args.experiment))
    _devices_for_mesh(cfg.mesh)
    kept = _stored_dtype(workdir, overrides) if cfg.model.declared_compute_dtype is not None else []
    if kept:
        overrides += kept
        cfg = get_config(args.experiment, overrides)
    if not args.no_fast_defaults and os.environ.get("AIGC_JAX_FAST_DEFAULTS", "1") != "0":
        from aigc_jax.train import host

        cfg, line = host.fast_config(args.experiment, cfg, overrides)
        if line:
            print(line)
    summary = train(cfg, workdir, progress=not args.no_progress)
    if "message" in summary:
        print(summary["message"])
        return 0
    ev = summary.get("eval", {})
    shown = ", ".join(f"{k}={v:.4g}" for k, v in ev.items())
    print(f"trained {cfg.name} to step {summary['step']} in {workdir}" + (f"; test {shown}" if shown else ""))
    return 0


def _devices_for_mesh(spec: str) -> None:
    """On a CPU, ``--mesh data=2,fsdp=2`` gets the 4 XLA devices it names (before JAX's backend starts, unless
    XLA_FLAGS sets a count): a CPU has one device otherwise. A spec without ``data`` leaves the count to JAX."""
    from aigc_jax.train import host

    sizes = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if not value.strip().isdigit():
            return  # the mesh parser reports the mistake in its own words
        sizes[name.strip()] = int(value)
    if "data" in sizes:
        host.prepare_cpu_devices(math.prod(sizes.values()))


def _stored_dtype(workdir: Path, overrides: list[str]) -> list[str]:
    """A resumed run keeps the compute dtype it was trained with (its config.json's, e.g. bfloat16 chosen by the
    fast defaults on another host; float32 where the file predates the field), unless the command sets one:
    ``["model.compute_dtype=..."]`` or ``[]``. Call it only for a model config that has the field."""
    import json

    if any(o.startswith("model.compute_dtype=") for o in overrides):
        return []
    try:
        model = json.loads((workdir / "config.json").read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return []  # no run there yet, or one the trainer reports in its own words
    if not isinstance(model, dict):
        return []
    # A config.json written before its family had the field (e.g. a VAE run before 2026-12-06) was float32.
    stored = model.get("compute_dtype", "float32")
    return [f"model.compute_dtype={stored}"] if isinstance(stored, str) else []


def _freeze_overrides(cfg, pattern: str) -> list[str]:
    """``--freeze REGEX`` as ``players.NAME.optim.freeze`` for each player with a parameter path it matches."""
    import re

    import jax

    from aigc_jax.core.errors import UserError
    from aigc_jax.core.registry import build_model
    from aigc_jax.train.optim import param_paths

    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise UserError(f"--freeze {pattern!r}: not a regular expression ({e})") from None
    params = jax.eval_shape(build_model(cfg).init, jax.random.key(0))[0]
    paths = {name: list(param_paths({name: sub})) for name, sub in params.items()}
    hit = [name for name, ps in paths.items() if any(regex.fullmatch(x) for x in ps)]
    if not hit:
        examples = ", ".join(ps[0] for ps in paths.values() if ps)
        raise UserError(f"--freeze {pattern!r} matches no parameter (paths look like {examples})")
    return [f"players.{name}.optim.freeze={pattern}" for name in hit]


def _sampler_settings(args, model) -> dict:
    """The settings given by --steps/--sampler/--guidance/--eta and --setting NAME=VALUE, parsed to the model's
    declared types (a `UserError` for a setting the model does not declare)."""
    from aigc_jax.core.contract import parse_settings
    from aigc_jax.core.errors import UserError

    texts = {}
    for item in args.settings:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UserError(f"--setting {item!r}: expected NAME=VALUE")
        texts[name.strip()] = value.strip()
    for flag in ("steps", "sampler", "guidance", "eta"):
        if getattr(args, flag) is not None:
            texts[flag] = str(getattr(args, flag))
    if texts and not any(c.static for c in model.spec.conditions):
        raise UserError(f"--{next(iter(texts))}: this model has no sampler settings")
    return parse_settings(model, texts)


def _cmd_sample(args) -> int:
    from aigc_jax import api
    from aigc_jax.core.config import check_seed
    from aigc_jax.core.contract import ImageToImage
    from aigc_jax.core.errors import UserError

    if args.num is not None and args.num < 1:
        raise UserError(f"--num {args.num}: expected a positive integer")
    check_seed(args.seed)
    cfg, model = api.run_model(args.workdir)
    if args.out is not None:  # before any work: a folder, under a file, or a folder we cannot write into
        from aigc_jax.train.writers import check_writable

        try:
            check_writable(args.out)
        except UserError as e:
            raise UserError(f"--out: {e}") from None
    name = cfg.name
    settings = _sampler_settings(args, model)
    text_flags = {"prompt": args.prompt, "tokens": args.tokens, "temperature": args.temperature,
                  "top_k": args.top_k, "top_p": args.top_p}
    given = {k: v for k, v in text_flags.items() if v is not None}
    if model.spec.output == "tokens":
        for flag in ("label", "input", "split"):
            if getattr(args, flag) is not None:
                raise UserError(f"--{flag} is for image models; {name} makes text")
        if args.out is not None and not args.out.lower().endswith(".txt"):
            raise UserError(f"--out {args.out}: text models write a .txt file")
        prompt = given.pop("prompt", None)
        num = 1 if args.num is None else args.num
        texts = api.sample_text(args.workdir, num, prompt=prompt, seed=args.seed, step=args.step,
                                **{**settings, **given})
        joined = "\n\n---\n\n".join(texts)
        if args.out:
            from aigc_jax.train.writers import save_text

            save_text(joined, args.out)
            print(f"wrote {num} samples from {args.workdir} to {args.out}")
        else:
            print(joined)
        return 0
    if given:
        raise UserError(f"--{next(iter(given)).replace('_', '-')} is for text models; {name} makes images")
    if args.out is None or not args.out.lower().endswith(".png"):
        raise UserError(f"--out {args.out}: expected a .png file name")
    from aigc_jax.train.writers import save_grid, save_panels

    paired = isinstance(model, ImageToImage)
    if not paired and (args.input is not None or args.split is not None):
        raise UserError(f"--{'input' if args.input is not None else 'split'} is for image-to-image models; "
                        f"{name} samples from noise")
    if paired:
        if args.label is not None:
            raise UserError(f"--label: {name} is not a conditional model")
        if args.input is None:
            from aigc_jax.train.sampling import panel_images

            setup, state, step = api.restore_run(args.workdir, step=args.step)
            split = args.split or "test"
            panels = panel_images(setup, state, 64 if args.num is None else args.num, args.seed, split=split)
            out = save_panels(panels, args.out)
            print(f"wrote input | output | target of {len(panels)} {split} images from {args.workdir} "
                  f"(step {step}) to {out}")
            return 0
        from aigc_jax.data.images import read_images

        if args.split is not None or args.num is not None:
            raise UserError(f"--{'split' if args.split is not None else 'num'}: with --input the images are those "
                            f"of {args.input}")
        y, x = api.translate_images(args.workdir, read_images(args.input), seed=args.seed, step=args.step)
        import numpy as np

        out = save_panels(np.stack([np.broadcast_to(x, y.shape), y], axis=1), args.out)
        print(f"wrote input | output of {len(x)} images from {args.input} ({args.workdir}) to {out}")
        return 0
    num = 64 if args.num is None else args.num
    label = model.spec.condition("label")
    cond = {}
    if args.label is not None:
        if label is None:
            raise UserError(f"--label: {name} is not a conditional model")
        cond[label.name] = args.label
    elif label is not None:
        from aigc_jax.core.contract import grid_conditions

        cond = grid_conditions(model.spec, num)
    images = api.sample(args.workdir, num, seed=args.seed, step=args.step, **cond, **settings)
    out = save_grid(images, args.out)
    print(f"wrote {num} samples from {args.workdir} to {out}")
    return 0


def _cmd_bench(args) -> int:
    import json

    from aigc_jax.api import get_config
    from aigc_jax.core.errors import UserError
    from aigc_jax.core.registry import list_experiments
    from aigc_jax.train import bench
    from aigc_jax.train.writers import save_text

    names = args.experiments or list_experiments()
    for name in names:
        get_config(name, list(args.overrides))  # an unknown experiment or override: one line, before any work
    if not args.seconds > 0:
        raise UserError(f"--seconds {args.seconds}: expected a positive number")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists():
        raise UserError(f"--out {out} exists; choose a new file")
    result = bench.bench(names, list(args.overrides), args.seconds, fast=not args.no_fast_defaults and
                         os.environ.get("AIGC_JAX_FAST_DEFAULTS", "1") != "0",
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
    text = json.dumps(result, indent=2)
    if out is not None:
        save_text(text + "\n", out)
    print(text if args.json else bench.table(result))
    return 0


def _cmd_compile(args) -> int:
    if args.topology is not None:
        from aigc_jax.train import aot

        gen, shape = aot.parse_topology(args.topology)
        aot.quiet_tpu_environment()  # before JAX starts a backend: no TPU is attached
        import jax

        if "JAX_PLATFORMS" not in os.environ:
            jax.config.update("jax_platforms", "cpu")  # the host runs the tracing; libtpu only compiles
    import json

    from aigc_jax.api import get_config
    from aigc_jax.parallel import make_mesh
    from aigc_jax.train import aot

    overrides = list(args.overrides) + ([f"mesh={args.mesh}"] if args.mesh is not None else [])
    cfg = get_config(args.experiment, overrides)
    chip = None
    if args.topology is not None:
        devices = aot.topology_devices(gen, shape)
        chip = aot.CHIPS.get(gen)
        where = f"TPU {gen} {shape} ({len(devices)} chips)"
    else:
        import jax

        devices = jax.devices()
        where = f"this host ({len(devices)} {devices[0].platform} devices)"
    report = aot.compile_report(cfg, make_mesh(cfg.mesh, devices), chip=chip, sampler=not args.no_sampler)
    report["topology"] = f"{gen}:{shape}" if args.topology is not None else "host"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(aot.describe(report, where))
    return 0


def _cmd_average(args) -> int:
    from aigc_jax.train.averaging import average_run

    record = average_run(args.workdir, args.last, args.out)
    print(f"wrote {args.out}: the mean of {args.workdir} at steps {', '.join(map(str, record['steps']))}")
    return 0


def _cmd_export(args) -> int:
    from aigc_jax import api
    from aigc_jax.export import export_run

    _, model = api.run_model(args.workdir)
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    m = export_run(args.workdir, args.out_dir, step=args.step, member=args.member,
                   settings=_sampler_settings(args, model), prompt_length=args.prompt_length, platforms=platforms)
    shapes = ", ".join(f"{i['name']} {i['dtype']}[{', '.join(map(str, i['shape']))}]" for i in m["inputs"])
    out = m["outputs"][0]
    compiled = (f"; first call here {m['first_call_compile_seconds']:.1f} s"
                if m["first_call_compile_seconds"] is not None else "")
    print(f"wrote {args.out_dir}: {m['experiment']} step {m['step']}, {m['size_bytes'] / 1e6:.1f} MB for "
          f"{', '.join(m['platforms'])}{compiled}; ({shapes}) -> {out['dtype']}[{', '.join(map(str, out['shape']))}]"
          + (f"; settings {m['settings']}" if m["settings"] else ""))
    return 0


def _cmd_eval(args) -> int:
    from aigc_jax import api
    from aigc_jax.core.errors import UserError
    from aigc_jax.train.loop import _write_json

    if args.num_samples < 0 or args.importance_samples < 0:
        raise UserError("--num-samples and --importance-samples must be positive (0: the defaults)")
    from aigc_jax.metrics.sample_quality import default_extractor
    from aigc_jax.train.evaluation import resolve_metrics

    cfg, model = api.run_model(args.workdir)
    out = Path(args.workdir) / "eval.json"
    if not os.access(args.workdir, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"cannot write {out}: the run directory is not writable (nothing was evaluated)")
    try:
        resolve_metrics(model, cfg.name, args.metrics)
    except UserError as e:
        raise UserError(f"--metrics: {e}") from None
    extractor = args.extractor or default_extractor(model.spec.image_shape)
    if args.inception_weights and extractor != "inception-v3":
        raise UserError(f"--inception-weights is for the inception-v3 extractor; this evaluation uses {extractor} "
                        "(choose it with --extractor inception-v3)")
    result = api.evaluate(args.workdir, args.metrics or None, num_samples=args.num_samples or None,
                          step=args.step, importance_samples=args.importance_samples, extractor=args.extractor,
                          inception_weights=args.inception_weights, progress=not args.no_progress,
                          ensemble=args.ensemble, settings=_sampler_settings(args, model))
    _write_json(out, result)
    for k, v in result.items():
        if k == "members":
            continue  # in eval.json
        if k == "ensemble":
            for ek, ev in v.items():
                print(f"ensemble {ek}: {ev:.4f}" if isinstance(ev, float) else f"ensemble {ek}: {ev}")
            continue
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import signal

    previous = None
    if threading.current_thread() is threading.main_thread():  # training installs its own handler while it runs
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        if previous is not None:  # main() may be called in a process that has its own (e.g. a test runner)
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    import logging

    from aigc_jax.checkpoint.manager import CheckpointError
    from aigc_jax.core.errors import Interrupted, NonFiniteLossError, UserError

    # Orbax's restore tasks that failed on a damaged checkpoint are reported by asyncio when collected; the error
    # that matters is already one line of ours.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)  # Orbax's informational warnings are not for users
    except ImportError:  # pragma: no cover
        pass
    from aigc_jax.train.aot import quiet_libtpu_if_no_tpu

    quiet_libtpu_if_no_tpu()  # before any JAX backend starts
    try:
        args = _parser().parse_args(argv)
        if args.command in ("train", "sample", "eval", "average", "export"):
            from aigc_jax.train import host

            host.use_compilation_cache()
        return {"list": _cmd_list, "train": _cmd_train, "sample": _cmd_sample, "compile": _cmd_compile,
                "bench": _cmd_bench,
                "average": _cmd_average, "eval": _cmd_eval, "export": _cmd_export}[args.command](args)
    except _CLIError as e:
        print(str(e), file=sys.stderr)
        return 2
    except (NonFiniteLossError, CheckpointError) as e:  # the run, not the command line, is at fault
        print(f"aigc-jax: error: {e}", file=sys.stderr)
        return 1
    except UserError as e:
        print(f"aigc-jax: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # training stopped by a signal: the message says what was checkpointed
        print(f"aigc-jax: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # before training started, or in sample/eval (which write their output last)
        print("aigc-jax: interrupted; nothing was written by this command", file=sys.stderr)
        return 130
    except _Terminated:
        print("aigc-jax: received SIGTERM; nothing was written by this command", file=sys.stderr)
        return 143
    except OSError as e:  # the file system refused: read-only, full, missing, not a directory
        where = f": {e.filename}" if e.filename else ""
        print(f"aigc-jax: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
