"""The argparse parser of the ``latentebm`` command (:func:`build_parser`): every command, its
options, help texts and examples, and the command function each one runs (``args.func``).
"""

from __future__ import annotations

import argparse

from latentebm.cli.evaluate import cmd_evaluate, cmd_mnist_features, cmd_score_molecules
from latentebm.cli.generate import cmd_generate, cmd_interpolate
from latentebm.cli.options import (
    add_decode_args,
    add_generate_decode_args,
    chain_steps,
    int_at_least,
    non_negative_int,
    positive_int,
    seed_int,
    share_below_one,
)
from latentebm.cli.recipes import cmd_cat, cmd_cp, cmd_keys, cmd_ls, cmd_train
from latentebm.cli.run_tools import cmd_diagnose, cmd_export, cmd_plot

EXAMPLES = """\
examples:
  latentebm train recipes/quickstart.yaml
  LATENTEBM_DATA=../shared/data latentebm train recipes/ptb.yaml
  latentebm train ptb trainer.max_steps=2000 optim.generator.lr=5e-4 seed=3
  latentebm train ptb trainer.run_dir=runs/ptb/long trainer.resume=auto
  latentebm generate runs/ptb/20261123-101500 -n 20 --decode sample --temperature 0.8
  latentebm diagnose runs/ptb/20261123-101500 --long-chain-steps 2000   # d_t, r_t plots
  latentebm ls
  latentebm cat ptb trainer.max_steps=100      # the resolved recipe
  latentebm keys                               # every recipe key, documented
  latentebm keys shortrun_mnist                # the keys of a short-run recipe
  latentebm cp ptb my_ptb.yaml
"""


OVERRIDES_HELP = (
    "dotted overrides, e.g. seed=3; '~key.path' deletes a key of the recipe (its default "
    "applies, or later items rebuild it), always before the key=value items (quote it: shells "
    "expand ~word)"
)


def _version() -> str:
    """``latentebm X (torch Y, Python Z)`` for ``--version`` (torch's version from its installed
    metadata: importing torch would cost every command's start-up two seconds)."""
    import platform
    from importlib import metadata

    from latentebm import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"latentebm {__version__} (torch {torch_version}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentebm",
        description="Latent-space energy-based prior models trained with short-run Langevin.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a model from a recipe",
        epilog="examples:\n  latentebm train recipes/quickstart.yaml\n"
        "  latentebm train ptb trainer.max_steps=100 model.posterior_chain.n_steps=10\n"
        "  latentebm train ptb trainer.resume=auto\n"
        "  latentebm train qm9 '~model.generator' "
        "model.generator._component_=latentebm.generators.transformer.TransformerDecoder\n"
        "  latentebm train ptb_reference --processes 2    # two data-parallel processes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("recipe", help="a recipe file, or a built-in recipe name (latentebm ls)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    train.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="train with N data-parallel processes on this machine, trainer.batch_size split "
        "among them (the same examples per update), OMP_NUM_THREADS or cores/N threads each; "
        "on a CPU the faster way for text (docs/performance.md); default 1",
    )
    train.set_defaults(func=cmd_train)

    gen = sub.add_parser(
        "generate",
        help="sample from a trained model",
        epilog="examples:\n  latentebm generate runs/ptb/20261123-101500 -n 20\n"
        "  latentebm generate RUN_DIR -n 1000 --decode sample --top-k 40 -o samples.txt\n"
        "  latentebm generate RUN_DIR -n 20 --decode beam --beam-size 5\n"
        "  latentebm generate RUN_DIR -n 100 --decode sample --top-p 0.9 "
        "--repetition-penalty 1.2\n"
        "  latentebm generate RUN_DIR -n 5 --langevin-steps 100 --trajectory 0,40,100\n"
        "--trajectory writes trajectory.txt and energy.png (mean f(z) along the chain) into\n"
        "RUN_DIR/samples/trajectory-<timestamp>/ (or --trajectory-dir DIR; never overwritten).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("run", help="a run directory (newest checkpoint) or a checkpoint file")
    gen.add_argument(
        "-n", type=positive_int, default=10, help="number of samples / chains (default 10)"
    )
    add_decode_args(gen)
    gen.set_defaults(decode=None)  # molecules: sample; text: greedy (as evaluate)
    add_generate_decode_args(gen)
    gen.add_argument(
        "--langevin-steps",
        type=non_negative_int,
        default=None,
        help="prior chain length (default: K0; 0: z from N(0, sigma^2 I))",
    )
    gen.add_argument(
        "--trajectory",
        type=chain_steps,
        default=None,
        metavar="STEPS",
        help="decode z at these chain steps, e.g. 0,40,100, and plot the energy along the chain",
    )
    gen.add_argument("--trajectory-dir", default=None, metavar="DIR", help="see --trajectory")
    gen.add_argument("--seed", type=seed_int, default=None)
    gen.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    gen.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")
    gen.add_argument("--force", action="store_true", help="overwrite --output/--grid if they exist")
    gen.add_argument(
        "--grid", default=None, metavar="PNG", help="also draw the samples (molecule tasks)"
    )
    gen.set_defaults(func=cmd_generate)

    interp = sub.add_parser(
        "interpolate",
        help="decode a path between the posterior z of two sentences",
        epilog="examples:\n"
        "  latentebm interpolate RUN_DIR 'the cat sees a fish' 'a dog eats some milk'\n"
        "  latentebm interpolate RUN_DIR 'a b' 'c d' --points 10 --path slerp --decode beam\n"
        "  latentebm interpolate MNIST_RUN test:3 test:17 -o strip.png   # image models\n"
        "  latentebm interpolate SHORTRUN_RUN noise noise -o strip.png   # data-space EBM\n"
        "prints t<TAB>sentence lines; z of a sentence = mean of --chains posterior chains.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    interp.add_argument("run", help="a run directory (newest checkpoint) or a checkpoint file")
    interp.add_argument("sentence_a")
    interp.add_argument("sentence_b")
    interp.add_argument(
        "--points", type=int_at_least(2), default=8, help="points on the path (default 8)"
    )
    interp.add_argument("--path", choices=("linear", "slerp"), default="linear")
    interp.add_argument(
        "--chains",
        type=positive_int,
        default=8,
        help="posterior chains averaged per sentence (default 8)",
    )
    interp.add_argument(
        "--posterior-steps",
        type=non_negative_int,
        default=None,
        help="posterior chain length (default: K1)",
    )
    add_decode_args(interp)
    interp.add_argument("--seed", type=seed_int, default=None)
    interp.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    interp.add_argument("-o", "--output", default=None, help="image models: the PNG strip to write")
    interp.add_argument("--force", action="store_true", help="overwrite -o")
    interp.set_defaults(func=cmd_interpolate)

    diag = sub.add_parser(
        "diagnose",
        help="plot d_t, r_t and a long prior chain of a run (Nijkamp et al. 2020)",
        epilog="examples:\n  latentebm diagnose runs/ptb/20261123-101500\n"
        "  latentebm diagnose RUN_DIR --long-chain-steps 0 --usage-examples 0   # no checkpoint\n"
        "writes RUN_DIR/diagnostics/ (or -o DIR); existing files are never overwritten: a\n"
        "second run writes into diagnostics-2/ (DIR-2/), and so on.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diag.add_argument("run", help="a run directory (metrics.jsonl and checkpoints)")
    diag.add_argument(
        "--long-chain-steps",
        type=non_negative_int,
        default=2000,
        metavar="N",
        help="Langevin steps of the long prior chain (default 2000; 0: skip it)",
    )
    diag.add_argument(
        "--chains",
        type=positive_int,
        default=64,
        metavar="N",
        help="long-chain chains (default 64)",
    )
    diag.add_argument("--seed", type=seed_int, default=0, help="long-chain seed (default 0)")
    diag.add_argument(
        "--usage-examples",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="active units, I(x;z), recon gain on N valid examples (default 100; 0: skip)",
    )
    diag.add_argument(
        "-o", "--output", default=None, metavar="DIR", help="default: RUN_DIR/diagnostics"
    )
    diag.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    diag.set_defaults(func=cmd_diagnose)

    plot = sub.add_parser(
        "plot",
        help="training curves of a run as a PNG (recon NLL, energies, d_t, throughput)",
        epilog="examples:\n  latentebm plot runs/ptb/latest\n"
        "  latentebm plot RUN_DIR --keys recon_nll,posterior_grad_norm -o curves.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument("run", help="a run directory (its metrics.jsonl)")
    plot.add_argument(
        "-o", "--output", default=None, help="the PNG (default RUN/curves.png; never overwritten)"
    )
    plot.add_argument(
        "--keys", default=None, help="comma-separated metrics, one panel each (default: a set)"
    )
    plot.set_defaults(func=cmd_plot)

    ev = sub.add_parser(
        "evaluate",
        help="marginal NLL, recon NLL, latent usage, FPPL, RPPL, BLEU ... of a trained model "
        "on a split (writes metrics.json)",
        epilog="examples:\n  latentebm evaluate runs/ptb/20261123-101500\n"
        "  latentebm evaluate RUN_DIR --metrics marginal_nll,recon_nll,latent_usage\n"
        "  latentebm evaluate RUN_DIR --estimator is --chain-steps 100   # fast, looser NLL\n"
        "  latentebm evaluate RUN_DIR --max-batches 2 -o /tmp/metrics.json   # quick look\n"
        "  latentebm evaluate RUN_DIR --metrics fppl,rppl,bleu --lm runs/ptb/lm_real.pt \\\n"
        "      --lm-set epochs=2 --lm-set hidden_dim=256   # the same scorer for every model\n"
        "metrics: marginal_nll (alias nll), recon_nll, latent_usage, fppl, rppl, bleu\n"
        "(reconstruction BLEU, self-BLEU, distinct-n, length);\n"
        "protocol in docs/metrics.md. Writes RUN_DIR/metrics.json (or -o PATH), merging: an\n"
        "earlier result for the same split and metric moves into the new entry's history.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("run", help="a run directory (newest checkpoint) or a checkpoint file")
    ev.add_argument(
        "--split", default=None, help="default: test (valid when the task has no test split)"
    )
    ev.add_argument(
        "--metrics",
        default=None,
        help="comma-separated (default: the task's, marginal_nll for text, molecules for "
        "molecules)",
    )
    like = ev.add_argument_group(
        "marginal_nll (alias nll), recon_nll, latent_usage (docs/metrics.md)"
    )
    like.add_argument(
        "--estimator",
        choices=("ais", "is"),
        default="ais",
        help="ais: annealed importance sampling (default, tight); is: importance sampling "
        "(fast, looser)",
    )
    like.add_argument(
        "--chains",
        type=int_at_least(2),
        default=None,
        metavar="C",
        help="AIS chains per example (12); is: posterior chains the proposal is fitted to (16)",
    )
    like.add_argument(
        "--temperatures",
        type=positive_int,
        default=None,
        metavar="T",
        help="AIS temperatures of the likelihood path (500)",
    )
    like.add_argument(
        "--ais-init",
        choices=("pilot", "laplace", "reference", "both"),
        default=None,
        help="AIS start: pilot (default): per example, short pilots of the two paths below "
        "choose one, then a fresh run on it; laplace: a Laplace fit per example (exact for "
        "Gaussian-like posteriors); reference: N(0, sigma^2 I) (tight on the broad, rugged "
        "posteriors of trained text models; docs/RESULTS.md section 12b); both: both paths, "
        "keeping each example's larger estimate (not a lower bound: up to about one standard "
        "error high where the two agree)",
    )
    like.add_argument(
        "--reference-temperatures",
        type=positive_int,
        default=None,
        metavar="T",
        help="--ais-init pilot or both: temperatures of the reference path (500)",
    )
    like.add_argument(
        "--defensive",
        type=share_below_one,
        default=None,
        metavar="F",
        help="laplace (and pilot's Laplace path): share of N(0, sigma^2 I) in the start "
        "density (0.3)",
    )
    like.add_argument(
        "--leapfrog", type=positive_int, default=None, metavar="L", help="HMC leapfrog (2)"
    )
    like.add_argument(
        "--laplace-starts", type=positive_int, default=None, metavar="S", help="mode searches (8)"
    )
    like.add_argument(
        "--laplace-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="Adam steps of each mode search (50)",
    )
    like.add_argument(
        "--log-z-chains",
        type=int_at_least(2),
        default=None,
        metavar="N",
        help="log Z AIS chains (1024)",
    )
    like.add_argument(
        "--log-z-temperatures",
        type=positive_int,
        default=None,
        metavar="T",
        help="log Z AIS (1000)",
    )
    like.add_argument(
        "--importance-samples",
        type=positive_int,
        default=None,
        metavar="M",
        help="is: samples (100)",
    )
    like.add_argument(
        "--chain-steps",
        type=positive_int,
        default=None,
        metavar="K",
        help="is: chain steps (K1; >= 1)",
    )
    like.add_argument(
        "--usage-examples",
        type=int_at_least(2),
        default=None,
        metavar="N",
        help="latent_usage: N examples spread over the split (1000)",
    )
    like.add_argument(
        "--per-example",
        action="store_true",
        default=None,
        help="marginal_nll: also record every example's log p(x) and standard error, in the "
        "order of the length-sorted split (for paired comparisons of two models)",
    )
    ev.add_argument("--batch-size", type=positive_int, default=None, metavar="B", help="default 64")
    ev.add_argument(
        "--max-batches", type=positive_int, default=None, metavar="N", help="first N only"
    )
    ev.add_argument(
        "--spread",
        action="store_true",
        help="with --max-batches: N batches spread over the length-sorted split, not the first",
    )
    ev.add_argument("--seed", type=seed_int, default=0)
    ev.add_argument("-o", "--output", default=None, metavar="PATH", help="default RUN/metrics.json")
    ev.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    text = ev.add_argument_group("fppl, rppl, bleu (text); moses, molecules (molecules)")
    text.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="generated samples (fppl 10000, moses 30000, molecules 10000)",
    )
    text.add_argument(
        "--jobs", type=positive_int, default=None, metavar="J", help="RDKit worker processes (2)"
    )
    text.add_argument(
        "--rppl-samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="default: train split size",
    )
    text.add_argument(
        "--self-bleu-samples", type=int_at_least(2), default=None, metavar="N", help="default 1000"
    )
    text.add_argument(
        "--langevin-steps",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="prior chain (default K0)",
    )
    add_decode_args(text)
    text.set_defaults(decode=None)  # text: greedy (FPPL protocol); molecules: sample
    text.add_argument(
        "--recon-sentences",
        type=positive_int,
        default=None,
        metavar="N",
        help="BLEU: first N (all)",
    )
    text.add_argument(
        "--recon-steps",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="BLEU, recon_nll: posterior chain (K1)",
    )
    text.add_argument(
        "--recon-chains", type=positive_int, default=None, metavar="C", help="default 1"
    )
    text.add_argument(
        "--lm",
        default=None,
        metavar="PATH",
        help="the real-data scorer: loaded if it exists, else trained and saved there "
        "(default RUN/eval/lm_real.pt)",
    )
    text.add_argument(
        "--lm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="language-model setting (embedding_dim, hidden_dim, num_layers, dropout, "
        "batch_size, lr, epochs, max_seconds, grad_clip, seed); repeatable",
    )
    image = ev.add_argument_group(
        "anomaly, mse, fid (images)",
        "A data-space short-run EBM run has mse (the default: its initial noise fitted to each "
        "image through the noise-free chain, Nijkamp et al. 2019) and fid; there --recon-images "
        "defaults to the recipe's trainer.reconstruction_images and --recon-steps counts the "
        "fit's Adam iterations (trainer.reconstruction_iters).",
    )
    image.add_argument(
        "--anomaly-steps",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="posterior chain (K1)",
    )
    image.add_argument(
        "--anomaly-chains",
        type=positive_int,
        default=None,
        metavar="C",
        help="chains per image (1)",
    )
    image.add_argument(
        "--recon-images", type=positive_int, default=None, metavar="N", help="mse: first N (all)"
    )
    image.add_argument(
        "--fid-features",
        default=None,
        metavar="PATH",
        help="fid: a net from `latentebm mnist-features PATH` (MNIST-FID)",
    )
    image.add_argument(
        "--fid-authors",
        action="store_true",
        help="fid: the authors' protocol, 50,000 samples against the training split",
    )
    image.add_argument(
        "--inception",
        default=None,
        metavar="PATH",
        help="fid: NVIDIA's inception-2015-12-05.pt TorchScript file (standard FID)",
    )
    ev.set_defaults(func=cmd_evaluate)
    # what each option is when not given: evaluate of a short-run run refuses the others
    ev.set_defaults(option_defaults={a.dest: a.default for a in ev._actions if a.option_strings})

    export = sub.add_parser(
        "export",
        help="write a trained model as a small folder to share or load",
        description=(
            "Write RUN's newest checkpoint (or CHECKPOINT) to the folder OUT without what only "
            "training needs: model.pt (recipe, tokenizer, weights), config.yaml and a model "
            "card README.md. Any command or latentebm.load() takes the folder in place of a run."
        ),
    )
    export.add_argument("run", help="run directory or checkpoint")
    export.add_argument("out", help="new folder (never overwritten)")
    export.add_argument(
        "--card",
        default=None,
        help="JSON file of model card fields: title, description, data, licence, budget, "
        "metrics (an object), metrics_command, load_as",
    )
    export.set_defaults(func=cmd_export)

    score = sub.add_parser(
        "score-molecules",
        help="the MOSES metric suite of any SMILES file (MOSES's get_all_metrics)",
        description=(
            "Score a file of generated molecules: the MOSES suite (valid, unique@k, FCD, SNN, "
            "Frag, Scaf, IntDiv, Filters, property distances, novelty with --train) against the "
            "MOSES test sets under the data root, and/or the QM9 table (validity, uniqueness, "
            "novelty). Every row is one sample; empty or unparsable ones count as invalid."
        ),
        epilog=(
            "examples:\n  latentebm score-molecules samples.smi --reference-molecules 20000\n"
            "  latentebm score-molecules gen.csv --column SMILES --metrics molecules "
            "--train train.smi\nThe MOSES reference statistics are built once from "
            "DATA_ROOT/moses/ (minutes; see docs/datasets.md) and cached."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("file", help=".smi/.txt (one per line) or .csv, optionally .gz")
    score.add_argument("--column", default=None, help=".csv: the SMILES column (default smiles)")
    score.add_argument("--metrics", default="moses", help="moses, molecules, or both (comma)")
    score.add_argument("--train", default=None, help="training molecules, for novelty")
    score.add_argument(
        "--reference-molecules",
        type=positive_int,
        default=None,
        help="moses: build the reference from this many molecules of each test set (default "
        "all, MOSES's protocol; FCD always uses MOSES's own statistics)",
    )
    score.add_argument("--n-jobs", type=positive_int, default=2, help="RDKit worker processes")
    score.add_argument("--data-root", default=None, help="holds moses/ (default $LATENTEBM_DATA)")
    score.add_argument("--cache-dir", default=None, help="default ~/.cache/latentebm")
    score.add_argument("-o", "--output", default=None, help="write the scores as JSON")
    score.add_argument("--force", action="store_true", help="overwrite --output")
    score.set_defaults(func=cmd_score_molecules)

    feats = sub.add_parser(
        "mnist-features",
        help="train the MNIST classifier whose features give MNIST-FID",
        epilog="MNIST-FID is not comparable to Inception FIDs; see docs/metrics.md.",
    )
    feats.add_argument("output", help="where to save the network (.pt); never overwritten")
    feats.add_argument("--epochs", type=positive_int, default=2)
    feats.add_argument("--seed", type=seed_int, default=0)
    feats.add_argument("--data-root", default=None, help="default $LATENTEBM_DATA")
    feats.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    feats.set_defaults(func=cmd_mnist_features)

    cat = sub.add_parser("cat", help="print a recipe resolved with overrides and defaults")
    cat.add_argument("recipe", help="a recipe file, or a built-in recipe name")
    cat.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    cat.set_defaults(func=cmd_cat)

    keys = sub.add_parser(
        "keys",
        help="list every recipe key with its type, default and meaning",
        epilog="examples:\n  latentebm keys                  # the latent-EBM recipe keys\n"
        "  latentebm keys ptb              # ... with the keys of ptb's task and generator\n"
        "  latentebm keys latentebm.generators.conv.ConvGenerator   # one component's keys\n"
        "  latentebm keys shortrun_mnist   # the keys of that recipe's family (shortrun)\n"
        "  latentebm keys shortrun",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="a recipe file or built-in recipe name (its family's keys and its components'), "
        "a family (latent, shortrun), or a component class path (its keys); default: latent. "
        "The defaults shown are the schema's and the classes' (latentebm cat RECIPE shows the "
        "recipe's values)",
    )
    keys.set_defaults(func=cmd_keys)

    ls = sub.add_parser("ls", help="list the built-in recipes")
    ls.set_defaults(func=cmd_ls)

    cp = sub.add_parser("cp", help="copy a built-in recipe to edit it")
    cp.add_argument("recipe")
    cp.add_argument("dest")
    cp.set_defaults(func=cmd_cp)
    return parser
