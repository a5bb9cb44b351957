"""The measuring commands: ``evaluate`` (its settings built from the options:
:func:`likelihood_settings` and those of the text, molecule and image metrics),
``score-molecules`` (the MOSES suite of any SMILES file) and ``mnist-features`` (the network of
MNIST-FID; the one command of the front end that builds a task).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from latentebm.cli.options import decode_options


def _text_eval_settings(args: argparse.Namespace) -> object:
    """``TextEvalSettings`` from the ``evaluate`` options (``--lm-set`` parsed as YAML)."""
    import yaml

    from latentebm.metrics.lm import LMConfig
    from latentebm.metrics.text_eval import TextEvalSettings

    lm_values: dict[str, object] = {}
    for item in args.lm_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--lm-set {item!r}: expected KEY=VALUE (e.g. epochs=2)")
        lm_values[key.strip()] = yaml.safe_load(value)
    options = {
        "n_samples": args.samples,
        "rppl_samples": args.rppl_samples,
        "self_bleu_samples": args.self_bleu_samples,
        "langevin_steps": args.langevin_steps,
        "reconstruction_sentences": args.recon_sentences,
        "reconstruction_steps": args.recon_steps,
        "reconstruction_chains": args.recon_chains,
        "lm_path": args.lm,
    }
    options = {key: value for key, value in options.items() if value is not None}
    decode = decode_options(args)
    decode["decode"] = args.decode or "greedy"  # the public FPPL protocol decodes greedily
    return TextEvalSettings(
        **options,
        **decode,
        lm=LMConfig.from_dict(lm_values),  # type: ignore[arg-type]
    )


def _molecule_eval_settings(args: argparse.Namespace) -> object:
    """``MoleculeEvalSettings`` from the ``evaluate`` options."""
    from latentebm.metrics.molecule_eval import MoleculeEvalSettings

    options = {
        "n_samples": args.samples,
        "langevin_steps": args.langevin_steps,
        "n_jobs": args.jobs,
        "decode": args.decode or "sample",
        "temperature": args.temperature,
        "top_k": args.top_k,
    }
    return MoleculeEvalSettings(**{k: v for k, v in options.items() if v is not None})


def _image_eval_settings(args: argparse.Namespace) -> object:
    """``ImageEvalSettings`` from the ``evaluate`` options."""
    from latentebm.metrics.image_eval import ImageEvalSettings

    options = {
        "anomaly_steps": args.anomaly_steps,
        "anomaly_chains": args.anomaly_chains,
        "recon_images": args.recon_images,
        "recon_steps": args.recon_steps,
        "fid_samples": args.samples,
        "langevin_steps": args.langevin_steps,
        "fid_features": args.fid_features,
        "inception": args.inception,
    }
    settings = ImageEvalSettings(**{k: v for k, v in options.items() if v is not None})
    if args.fid_authors:
        settings = settings.authors_fid_protocol()
        if args.samples is not None:
            settings = dataclasses.replace(settings, fid_samples=args.samples)
    return settings


def cmd_mnist_features(args: argparse.Namespace) -> int:
    import torch

    from latentebm.build import resolve_device
    from latentebm.metrics.mnist_features import (
        classification_accuracy,
        save_mnist_feature_net,
        train_mnist_feature_net,
    )
    from latentebm.tasks.images import ImageTask

    out = Path(args.output)
    if out.exists():
        raise FileExistsError(f"{out}: exists; not overwritten")
    task = ImageTask(dataset="mnist", data_root=args.data_root)
    train_x, test_x = task.tensor("train"), task.tensor("test")
    train_y = torch.as_tensor(task.labels("train"))
    test_y = torch.as_tensor(task.labels("test"))
    device = resolve_device(args.device)
    net = train_mnist_feature_net(
        train_x, train_y, epochs=args.epochs, seed=args.seed, device=device
    )
    accuracy = classification_accuracy(net, test_x, test_y)
    save_mnist_feature_net(out, net, test_accuracy=accuracy)
    print(
        f"MNIST feature net: {args.epochs} epoch(s), {net.info['train_seconds']:.0f} s, "
        f"test accuracy {accuracy:.4f} -> {out}",
        file=sys.stderr,
    )
    return 0


def likelihood_settings(args: argparse.Namespace) -> object:
    """``LikelihoodEvalSettings`` from the ``evaluate`` options."""
    from latentebm.metrics.likelihood_eval import LikelihoodEvalSettings
    from latentebm.metrics.marginal import AISSettings, LogPartitionSettings

    def given(**values: object) -> dict[str, object]:
        return {key: value for key, value in values.items() if value is not None}

    is_mode = args.estimator == "is"
    init = args.ais_init or AISSettings.init
    if args.reference_temperatures is not None and init not in ("pilot", "both"):
        raise ValueError(
            f"--reference-temperatures: the reference path's share of --ais-init pilot or both "
            f"(this evaluation's start is {init}; with --ais-init reference, use --temperatures)"
        )
    ais = AISSettings(
        **given(  # type: ignore[arg-type]
            init=args.ais_init,
            n_chains=None if is_mode else args.chains,
            n_temperatures=args.temperatures,
            reference_temperatures=args.reference_temperatures,
            leapfrog_steps=args.leapfrog,
            laplace_starts=args.laplace_starts,
            laplace_steps=args.laplace_steps,
            defensive=args.defensive,
        )
    )
    log_z = LogPartitionSettings(
        **given(n_chains=args.log_z_chains, n_temperatures=args.log_z_temperatures)  # type: ignore[arg-type]
    )
    return LikelihoodEvalSettings(
        estimator=args.estimator,
        ais=ais,
        log_z=log_z,
        **given(  # type: ignore[arg-type]
            n_importance=args.importance_samples,
            is_chains=args.chains if is_mode else None,
            is_chain_steps=args.chain_steps,
            recon_steps=args.recon_steps,
            usage_examples=args.usage_examples,
            per_example=args.per_example,
        ),
    )


def cmd_score_molecules(args: argparse.Namespace) -> int:
    """``latentebm score-molecules FILE``: the MOSES suite and/or the QM9 table of any file of
    SMILES (MOSES's ``get_all_metrics(gen)``, from the command line)."""
    import json

    from latentebm.atomic import write_bytes_atomic
    from latentebm.metrics.molecule_eval import MoleculeEvalSettings, score_molecules
    from latentebm.metrics.molecules import read_generated_smiles

    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    unknown = sorted(set(names) - {"moses", "molecules"})
    if unknown or not names:
        raise ValueError(f"--metrics: unknown {', '.join(unknown)} (choose moses, molecules)")
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:
        raise FileExistsError(f"{out}: exists; not overwritten (use --force)")
    needed = ["rdkit", *(["fcd_torch"] if "moses" in names else [])]
    for module in needed:
        try:
            __import__(module)
        except ImportError as error:
            raise ValueError(
                f"score-molecules needs {module} ({error}): pip install 'latentebm[mol]'"
            ) from error
    samples = read_generated_smiles(args.file, args.column)
    if not samples:
        raise ValueError(f"{args.file}: no molecules")
    train = read_generated_smiles(args.train) if args.train else None
    print(
        f"scoring {len(samples):,} molecules of {args.file}"
        + (f" (novelty against {len(train):,} of {args.train})" if train is not None else ""),
        file=sys.stderr,
    )
    settings = MoleculeEvalSettings(
        n_jobs=args.n_jobs,
        cache_dir=args.cache_dir,
        reference_molecules=args.reference_molecules,
    )
    scores = score_molecules(
        samples, names, settings, train=train, data_root=args.data_root, progress=True
    )
    for name, values in scores.items():
        print(f"{name}:")
        for key, value in values.items():
            if isinstance(value, float):
                print(f"  {key:<16} {value:.4g}")
            elif isinstance(value, int) and not isinstance(value, bool):
                print(f"  {key:<16} {value}")
    if out is not None:
        record = {"file": str(args.file), "train": args.train, **scores}
        write_bytes_atomic(out, (json.dumps(record, indent=1, default=str) + "\n").encode())
        print(f"written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from latentebm.evaluate import evaluate
    from latentebm.evaluate_table import format_table
    from latentebm.malloc_tuning import keep_freed_memory
    from latentebm.runs import model_family

    keep_freed_memory()  # the estimators' chains, as in cmd_train
    if model_family(args.run) == "shortrun":
        return _evaluate_shortrun(args)
    options = {"batch_size": args.batch_size}
    options = {key: value for key, value in options.items() if value is not None}
    result = evaluate(
        args.run,
        args.split,
        args.metrics,
        likelihood=likelihood_settings(args),  # type: ignore[arg-type]
        max_batches=args.max_batches,
        spread=args.spread,
        seed=args.seed,
        device=args.device,
        output=args.output,
        progress=not args.no_progress,
        text=_text_eval_settings(args),  # type: ignore[arg-type]
        molecules=_molecule_eval_settings(args),  # type: ignore[arg-type]
        images=_image_eval_settings(args),  # type: ignore[arg-type]
        **options,
    )
    print(format_table(result))
    print(f"written to {result['output']}")
    return 0


SHORTRUN_EVALUATE_OPTIONS = (
    "run",
    "split",
    "metrics",
    "seed",
    "device",
    "output",
    "batch_size",
    "no_progress",
    "samples",
    "recon_images",
    "recon_steps",
    "fid_features",
    "inception",
    "fid_authors",
)
"""The ``evaluate`` options that apply to a data-space short-run EBM run."""


def _evaluate_shortrun(args: argparse.Namespace) -> int:
    """``evaluate`` for a data-space short-run EBM run (:mod:`latentebm.shortrun.evaluate`);
    an option of the latent EBM's metrics is refused in one line."""
    from latentebm.evaluate_table import format_table
    from latentebm.shortrun.evaluate import evaluate_shortrun

    defaults = getattr(args, "option_defaults", {})  # set by the parser
    for name, value in vars(args).items():
        if name in SHORTRUN_EVALUATE_OPTIONS or name not in defaults:
            continue
        if value != defaults[name]:
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag}: does not apply to a data-space short-run EBM run (its metrics: mse, "
                "fid; options: --split, --metrics, --recon-images, --recon-steps, --samples, "
                "--fid-features, --inception, --fid-authors, --batch-size, --seed, --device, -o, "
                "--no-progress)"
            )
    settings = _image_eval_settings(args)
    if args.batch_size is not None:
        settings = dataclasses.replace(settings, batch_size=args.batch_size)  # type: ignore[type-var]
    result = evaluate_shortrun(
        args.run,
        args.split,
        args.metrics,
        images=settings,  # type: ignore[arg-type]
        seed=args.seed,
        device=args.device,
        output=args.output,
    )
    print(format_table(result))
    print(f"written to {result['output']}")
    return 0
