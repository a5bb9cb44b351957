"""Ground truth: does the EBM prior learn a multimodal prior that a Gaussian prior cannot?

    python benchmarks/ground_truth.py                       # text and images, z in 2-D, ~minutes
    python benchmarks/ground_truth.py --kinds text --z-dims 2,8 --steps 3000

For each kind (``text``: sentences through the LSTM text path; ``images``: continuous 28x28
images through the image path; ``images_linear``: the same images made by a linear generator
``x = W z + b + tau eps``, the recipe's generator linear too, so that only the prior can make
``p(x)`` multimodal) and latent dimension:

1. data from a known latent model (:mod:`latentebm.ground_truth`: a ring of 8 Gaussian modes in
   z, a fixed random generator of the recipe's own class and size);
2. ``latentebm train recipes/ground_truth_{kind}.yaml`` twice at equal updates: the EBM prior
   and ``model.prior.kind=gaussian`` (same decoder class, same seed and batches);
3. the marginal NLL of the test examples under the EBM model, the Gaussian model and the true
   model, each by the default AIS estimator (:mod:`latentebm.metrics.marginal`), the true model's
   also by reverse AIS from the examples' own latent vectors (an upper bound of its log p(x):
   the sandwich around the truth); text NLLs of the true model are shifted by ``log P(A)`` (the
   data are its sentences that end within the length cap, :func:`latentebm.ground_truth.
   true_nll_shift`); with 2-D latents the row's NLLs are exact, by quadrature on a grid over
   [-5, 5]^2 (:mod:`latentebm.metrics.quadrature`), unless a learned prior's mass reaches the
   grid's edge (a diverged energy): then the grid would score a truncated prior, the benchmark
   says so, and the row compares the AIS estimates (``nll_by`` in the JSON); for
   ``images_linear`` the true model's NLL is its closed form in any ``z_dim``
   (:func:`linear_references`, which also scores the best Gaussian-prior linear model);
4. the share of the Gaussian prior's NLL gap (to the true model) that the EBM prior closes;
5. for 2-D latents a figure: the true prior density, the learned EBM prior ``exp(f) N / Z`` on a
   grid, K0-step short-run chain samples of it, and the Gaussian model's posterior modes of the
   test examples (where a Gaussian prior has to put the data).

Writes a JSON record (``--json``) and the figure (``--figure``); prints a markdown table. Runs
that already reached ``--steps`` are reused (the folder ``--out`` keeps data and runs).
``--then STEPS`` adds a second phase: each model continued for STEPS updates in a new run from
its weights with the ``--then-set`` overrides (the protocol of docs/RESULTS.md's linear rows:
decayed learning rates), and the row scores the continued models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import cpu_model, git  # noqa: E402

import latentebm  # noqa: E402
from latentebm.checkpoint import save_atomic  # noqa: E402
from latentebm.ground_truth import (  # noqa: E402
    GroundTruthConfig,
    encode,
    load_true_model,
    true_nll_shift,
    write_dataset,
)
from latentebm.metrics.marginal import (  # noqa: E402
    AISSettings,
    ais_log_joint_normaliser,
    evaluate_marginal_nll,
)
from latentebm.metrics.quadrature import (  # noqa: E402
    EDGE_SHARE_LIMIT,
    grid_edge_share,
    quadrature_log_marginal,
)

REPO = Path(__file__).resolve().parent.parent
QUADRATURE_LIMIT = 5.0
"""The quadrature grid is ``[-QUADRATURE_LIMIT, QUADRATURE_LIMIT]^2``."""
KINDS: dict[str, dict[str, Any]] = {
    "text": {"kind": "text"},
    "images": {"kind": "images"},
    "images_linear": {"kind": "images", "image_generator": "linear"},
}
"""``--kinds`` -> the true model's settings (:class:`GroundTruthConfig`); each kind trains with
``recipes/ground_truth_{kind}.yaml``."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/ground_truth", help="data and runs")
    parser.add_argument("--kinds", default="text,images")
    parser.add_argument("--z-dims", default="2")
    parser.add_argument("--steps", type=int, default=3000, help="updates per model")
    parser.add_argument("--eval-examples", type=int, default=300, help="test examples scored")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the record here")
    parser.add_argument("--figure", default=None, help="write the 2-D figure here (.png)")
    parser.add_argument(
        "--set", action="append", default=[], help="extra recipe override (both priors)"
    )
    parser.add_argument("--tag", default="", help="suffix of the run folders (a variant)")
    parser.add_argument(
        "--gaussian-tag",
        default=None,
        help="use the Gaussian-prior run of this tag (when the variant's overrides only touch "
        "the EBM prior, e.g. optim.prior.lr); default: --tag",
    )
    parser.add_argument(
        "--runs",
        default=None,
        metavar="EBM_RUN,GAUSSIAN_RUN",
        help="evaluate these two trained runs (e.g. continued or forked ones whose folders do "
        "not follow the --tag naming) instead of training; --steps is then only recorded",
    )
    parser.add_argument(
        "--true-generator",
        action="store_true",
        help="images only: both models keep the true generator, fixed (trainer.init_from, "
        "trainer.freeze); the Gaussian-prior model is then the true generator under N(0, I) "
        "(nothing to train) and only the EBM prior learns, from posterior samples",
    )
    parser.add_argument(
        "--then",
        type=int,
        default=0,
        metavar="STEPS",
        help="after --steps, continue each model for STEPS more updates in a new run started "
        "from its weights (trainer.init_from: fresh optimiser moments and chains) with the "
        "--then-set overrides added (e.g. decayed learning rates); the row scores those",
    )
    parser.add_argument(
        "--then-set", action="append", default=[], help="extra override of the --then runs"
    )
    args = parser.parse_args(argv)
    if args.then < 0 or (args.then and (args.runs or args.true_generator)):
        parser.error("--then takes STEPS >= 0, and not with --runs or --true-generator")
    unknown = sorted(set(args.kinds.split(",")) - set(KINDS))
    if unknown:
        parser.error(f"--kinds: unknown {', '.join(unknown)} (known: {', '.join(KINDS)})")
    if args.runs and (args.runs.count(",") != 1 or args.true_generator):
        parser.error("--runs takes EBM_RUN,GAUSSIAN_RUN (and not --true-generator)")
    if args.true_generator and "text" in args.kinds.split(","):
        parser.error("--true-generator: images only (the text task numbers its words itself)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    started = time.time()
    for kind in args.kinds.split(","):
        for z_dim in (int(z) for z in args.z_dims.split(",")):
            rows.append(run_one(kind, z_dim, out, args))
    record = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "commit": git("rev-parse", "--short", "HEAD"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": cpu_model(),
        "threads": args.threads,
        "seconds": time.time() - started,
        "rows": rows,
    }
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if args.figure:
        figure([r for r in rows if r["z_dim"] == 2], out, Path(args.figure))
    return 0


def run_one(kind: str, z_dim: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    data_dir = out / "data" / f"{kind}{z_dim}"
    config = GroundTruthConfig(z_dim=z_dim, **KINDS[kind])
    summary_file = data_dir / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    else:
        summary = write_dataset(config, data_dir)
    runs: dict[str, Path] = {}
    extra: list[str] = []
    if args.true_generator:  # the Gaussian-prior model is the fixed true generator under N(0, I)
        runs["gaussian"] = true_generator_checkpoint(kind, z_dim, data_dir, out, args)
        extra = [
            f"trainer.init_from={runs['gaussian']}",
            "trainer.init_parts=[generator]",
            "trainer.freeze=[generator]",
        ]
    if args.runs:
        ebm_run, gaussian_run = args.runs.split(",")
        runs = {"ebm": Path(ebm_run), "gaussian": Path(gaussian_run)}
    for prior in ("ebm", "gaussian"):
        if prior in runs:
            continue
        tag = args.tag if prior == "ebm" or args.gaussian_tag is None else args.gaussian_tag
        run_dir = out / "runs" / f"{kind}{z_dim}_{prior}{tag}"
        train(kind, z_dim, prior, data_dir, run_dir, args, extra)
        runs[prior] = run_dir
    if args.then:  # a second phase from the first's weights, e.g. with decayed learning rates
        for prior, first in list(runs.items()):
            then = [*args.then_set, f"trainer.init_from={first}"]
            second = first.with_name(f"{first.name}_then{args.then}")
            train(kind, z_dim, prior, data_dir, second, args, then, steps=args.then)
            runs[prior] = second
    true_model, _ = load_true_model(data_dir)
    x_true, x_task, z_star = test_examples(kind, data_dir, config, runs["ebm"], args.eval_examples)
    settings = AISSettings()
    seed = torch.Generator().manual_seed(0)
    row: dict[str, Any] = {"kind": kind, "z_dim": z_dim, "steps": args.steps + args.then}
    row["overrides"], row["tag"] = list(args.set), args.tag
    if args.then:
        row["then"], row["then_overrides"] = args.then, list(args.then_set)
    row["true_generator"] = bool(args.true_generator)
    row["examples"] = int(x_true.shape[0])
    row["data"] = summary["splits"]
    shift = true_nll_shift(summary) if kind == "text" else 0.0
    t0 = time.process_time()
    progress(f"{kind}: the true model: AIS and reverse AIS on {x_true.shape[0]} test examples")
    truth = evaluate_marginal_nll(true_model, [x_true], _count, settings, generator=seed)
    upper = ais_log_joint_normaliser(true_model, x_true, settings, generator=seed, z_exact=z_star)
    row["true"] = {
        "nll": truth.nll_per_example + shift,
        "std_error": truth.std_error,
        "nll_lower_bound": -float(upper.summary.value.mean()) + shift,
        "log_p_a": shift,
        "cpu_seconds": time.process_time() - t0,
        "nll_ais": truth.nll_per_example + shift,
    }
    if z_dim == 2:  # the exact reference: quadrature
        progress(f"{kind}: the true model: quadrature")
        grid = quadrature_nll(true_model, x_true)
        row["true"]["nll_quadrature"] = grid["nll"] + shift
        row["true"]["grid_error"] = grid["grid_error"]
        row["true"]["grid_edge_share"] = grid["edge_share"]
        row["true"]["nll"] = row["true"]["nll_quadrature"]
    truncated: list[str] = []
    for prior, run_dir in runs.items():
        model = latentebm.load(run_dir).model
        t0 = time.process_time()
        progress(f"{kind}: the {prior} prior's model ({run_dir}): AIS")
        result = evaluate_marginal_nll(model, [x_task], _count, settings, generator=seed)
        row[prior] = {
            "nll": result.nll_per_example,
            "std_error": result.std_error,
            "nll_ais": result.nll_per_example,
            "log_z": result.log_z,
            "cpu_seconds": time.process_time() - t0,
            "run": str(run_dir),
        }
        if z_dim == 2:
            progress(f"{kind}: the {prior} prior's model: quadrature")
            grid = quadrature_nll(model, x_task)
            row[prior]["nll_quadrature"] = grid["nll"]
            row[prior]["grid_error"] = grid["grid_error"]
            row[prior]["grid_edge_share"] = grid["edge_share"]
            row[prior]["nll"] = grid["nll"]
            if grid["truncated"]:
                truncated.append(prior)
    row["nll_by"] = "quadrature" if z_dim == 2 else "ais"
    if config.image_generator == "linear":  # images only (GroundTruthConfig checks it)
        progress(f"{kind}: closed forms (the true model; the Gaussian prior's best linear model)")
        row.update(linear_references(data_dir, true_model, x_true))
    if truncated:  # a grid NLL of a cut prior is not the model's: compare AIS with AIS
        print(
            f"ground_truth: {kind}: the prior of {', '.join(truncated)} reaches the edge of the "
            f"quadrature grid [-{QUADRATURE_LIMIT:g}, {QUADRATURE_LIMIT:g}]^2 (edge share above "
            f"{EDGE_SHARE_LIMIT:g}); its grid NLL is that of a truncated prior: the row "
            "compares the AIS estimates instead",
            file=sys.stderr,
        )
        row["quadrature_truncated"] = truncated
        row["nll_by"] = "ais"
        for name in ("true", *runs):
            row[name]["nll"] = row[name]["nll_ais"]
    if "true_nll_closed_form" in row:  # exact in any z_dim: the reference of the gaps
        row["true"]["nll"] = row["true_nll_closed_form"]
        row["true"]["std_error_ais"] = row["true"]["std_error"]
        row["true"]["std_error"] = 0.0  # the AIS error no longer describes "nll"
    gap_gauss = row["gaussian"]["nll"] - row["true"]["nll"]
    gap_ebm = row["ebm"]["nll"] - row["true"]["nll"]
    row["gap_gaussian"], row["gap_ebm"] = gap_gauss, gap_ebm
    row["share_closed"] = (gap_gauss - gap_ebm) / gap_gauss if gap_gauss > 0 else float("nan")
    print(json.dumps({k: v for k, v in row.items() if k != "data"}, indent=1), flush=True)
    return row


def linear_references(
    data_dir: Path, true_model: torch.nn.Module, x: torch.Tensor
) -> dict[str, Any]:
    """Closed forms for linear-generator data: the true model's ``-log p(x)`` (a ring mixture
    through ``x = W z + b + tau eps`` is a Gaussian mixture), and the best model a Gaussian prior
    can reach with a linear generator and the true ``tau``: probabilistic PCA (Tipping and Bishop
    1999, "Probabilistic principal component analysis", eq. 7 with ``sigma^2 = tau^2`` held)
    fitted to the training images by maximum likelihood, ``W = U_d (Lambda_d - tau^2 I)^(1/2)``
    from the top ``d`` eigenvectors of their covariance, ``p(x) = N(mean, W W^T + tau^2 I)``.
    Mean NLL over ``x`` in nats per example."""
    import numpy as np

    from latentebm.mixture_prior import mixture_marginal_linear_gaussian

    generator = true_model.generator
    tau = float(generator.likelihood_sigma)
    flat = x.flatten(1).double()
    with torch.no_grad():
        exact = mixture_marginal_linear_gaussian(
            true_model.prior, generator.linear.weight, generator.linear.bias, tau, flat
        )
    train = torch.from_numpy(np.load(data_dir / "train.npy")).flatten(1).double()
    mean = train.mean(0)
    centred = train - mean
    values, vectors = torch.linalg.eigh(centred.T @ centred / train.shape[0])  # ascending
    d = true_model.z_dim
    weight = vectors[:, -d:] * (values[-d:] - tau**2).clamp_min(0).sqrt()
    eye = torch.eye(flat.shape[1], dtype=torch.float64)
    ppca = torch.distributions.MultivariateNormal(mean, weight @ weight.T + tau**2 * eye)
    return {
        "true_nll_closed_form": -float(exact.mean()),
        "gaussian_class_ml": {
            "nll": -float(ppca.log_prob(flat).mean()),
            "fitted_on": f"{train.shape[0]} training images (probabilistic PCA, tau held)",
        },
    }


def train(
    kind: str,
    z_dim: int,
    prior: str,
    data_dir: Path,
    run_dir: Path,
    args: argparse.Namespace,
    extra: list[str] | None = None,
    steps: int | None = None,
) -> None:
    """``latentebm train`` (a subprocess, one thread), resumed or skipped if already done."""
    steps = args.steps if steps is None else steps
    done = run_dir / "checkpoints" / f"step_{steps:08d}.pt"
    if done.exists():
        return
    task = (
        [f"task.train={data_dir / 'train.txt'}", f"task.valid={data_dir / 'valid.txt'}"]
        + [f"task.test={data_dir / 'test.txt'}"]
        if kind == "text"
        else [f"task.path={data_dir.resolve()}"]
    )
    command = [
        sys.executable,
        "-m",
        "latentebm.cli",
        "train",
        str(REPO / "recipes" / f"ground_truth_{kind}.yaml"),
        *task,
        f"model.z_dim={z_dim}",
        f"model.prior.kind={prior}",
        f"trainer.max_steps={steps}",
        f"trainer.checkpoint_every={steps}",
        f"trainer.run_dir={run_dir}",
        "trainer.resume=auto",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        *args.set,
        *(extra or []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(" ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, env=env)


def true_generator_checkpoint(
    kind: str, z_dim: int, data_dir: Path, out: Path, args: argparse.Namespace
) -> Path:
    """A checkpoint of the recipe's Gaussian-prior model whose generator is the true one: one
    update of ``latentebm train`` for the file's layout, its generator weights then replaced by
    the true model's (the same class and size, loaded strictly)."""
    path = out / "runs" / f"{kind}{z_dim}_true_generator.pt"
    if path.exists():
        return path
    run_dir = out / "runs" / f"{kind}{z_dim}_true_generator_layout"
    train(kind, z_dim, "gaussian", data_dir, run_dir, args, ["trainer.samples_at_end=0"], steps=1)
    state = torch.load(run_dir / "checkpoints" / "step_00000001.pt", weights_only=True)
    true_model, _ = load_true_model(data_dir)
    layout = latentebm.load(run_dir).model
    layout.generator.load_state_dict(true_model.generator.state_dict())  # strict: same class
    generator_keys = {f"generator.{k}": v for k, v in layout.generator.state_dict().items()}
    state["model"] = {**state["model"], **generator_keys}
    save_atomic(state, path)
    return path


def test_examples(
    kind: str, data_dir: Path, config: GroundTruthConfig, run_dir: Path, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` test examples for the true model and for the learned models (the text
    task's own token ids), and their true latent vectors."""
    z_star = torch.load(data_dir / "test_z.pt", weights_only=True)[:n]
    if kind == "text":
        lines = (data_dir / "test.txt").read_text(encoding="utf-8").splitlines()[:n]
        task = latentebm.load(run_dir).task
        return encode(lines, config), task.encode(lines), z_star
    import numpy as np

    x = torch.from_numpy(np.load(data_dir / "test.npy")[:n])
    return x, x, z_star


def progress(message: str) -> None:
    """One line on stderr per evaluation phase (each takes minutes on this CPU)."""
    print(f"ground_truth: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def quadrature_nll(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Mean ``-log p(x)`` on a 151 x 151 grid over [-5, 5]^2, the largest change on the first
    10 examples when the grid is refined to 201 x 201 (the grid's error), and whether the
    prior's mass reaches the grid's edge (``truncated``: then the NLL is that of the prior cut
    to the grid, not the model's)."""
    limit = QUADRATURE_LIMIT
    coarse = quadrature_log_marginal(model, x, limit=limit, points=151)  # type: ignore[arg-type]
    fine = quadrature_log_marginal(model, x[:10], limit=limit, points=201)  # type: ignore[arg-type]
    change = (fine.log_marginal - coarse.log_marginal[:10]).abs().max()
    return {
        "nll": -float(coarse.log_marginal.mean()),
        "grid_error": float(change),
        "edge_share": coarse.edge_share,
        "truncated": coarse.truncated,
    }


def _count(x: torch.Tensor) -> int:
    return int(x.shape[0])


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | z | updates | NLL by | true model | EBM prior | Gaussian prior "
        "| gap closed by the EBM prior |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, e, g = r["true"], r["ebm"], r["gaussian"]
        by_grid = r.get("nll_by", "quadrature" if "nll_quadrature" in t else "ais") == "quadrature"
        if by_grid:
            how = "quadrature (AIS)"
            if "true_nll_closed_form" in r:
                how = "quadrature; true: closed form (AIS)"
            true_other = t["nll_ais"]
            e_other, g_other = f" ({e['nll_ais']:.3f})", f" ({g['nll_ais']:.3f})"
        else:
            cut = r.get("quadrature_truncated")
            truth = "closed form; reverse AIS" if "true_nll_closed_form" in r else "reverse AIS"
            how = f"AIS (true: {truth})" + (f"; grid cuts {', '.join(cut)}" if cut else "")
            true_other = t["nll_lower_bound"]
            e_other, g_other = f" ± {e['std_error']:.3f}", f" ± {g['std_error']:.3f}"
        lines.append(
            f"| {r['kind']} | {r['z_dim']} | {r['steps']} | {how} | {t['nll']:.3f} "
            f"({true_other:.3f}) | {e['nll']:.3f}{e_other} | {g['nll']:.3f}{g_other} | "
            f"{100 * r['share_closed']:.0f} % |"
        )
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], out: Path, path: Path) -> None:
    """True prior density | learned EBM prior | its K0-step samples | Gaussian model's posterior
    modes of the test data, one row per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentebm.metrics.marginal import fit_laplace

    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.3 * len(rows)), squeeze=False)
    grid_axis = torch.linspace(-4, 4, 161)
    grid = torch.cartesian_prod(grid_axis, grid_axis)
    for row, ax in zip(rows, axes, strict=True):
        kind = row["kind"]
        data_dir = out / "data" / f"{kind}2"
        true_model, config = load_true_model(data_dir)
        ebm = latentebm.load(row["ebm"]["run"]).model
        gauss = latentebm.load(row["gaussian"]["run"])
        with torch.no_grad():
            true_density = true_model.prior.log_prob(grid).exp()
            learned = ebm.prior.log_density(grid)
            at_edge = not grid_edge_share(learned.view(161, 161), grid_axis) <= EDGE_SHARE_LIMIT
            learned = (learned - torch.logsumexp(learned, 0)).exp()
        samples = ebm.sample_prior(2000, generator=torch.Generator().manual_seed(0)).z
        outside = float((samples.abs() > 4).any(1).float().mean())
        x_true, x_task, _ = test_examples(kind, data_dir, config, Path(row["gaussian"]["run"]), 300)
        modes = fit_laplace(gauss.model, x_task, generator=torch.Generator().manual_seed(0))
        extent = (-4, 4, -4, 4)
        learned_title = "learned EBM prior exp(f) N / Z"
        if at_edge:  # normalised on the square, but its mass runs past it: say so
            learned_title += "\n(its mass reaches the square's edge: shown cut to it)"
        for a, image, title in (
            (ax[0], true_density, "true prior p(z)"),
            (ax[1], learned, learned_title),
        ):
            a.imshow(image.view(161, 161).T, origin="lower", extent=extent, cmap="viridis")
            a.set_title(f"{kind}: {title}", fontsize=9)
        ax[2].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
        chain_title = f"{kind}: EBM prior, K0 = {ebm.prior_chain.n_steps} chain"
        if outside > 0.01:  # else an empty-looking panel would pass for a collapsed prior
            radius = float(samples.norm(dim=1).median())
            chain_title += f"\n{100 * outside:.0f} % outside the square (median |z| {radius:.1f})"
        ax[2].set_title(chain_title, fontsize=9)
        m = modes.proposal.mean
        ax[3].scatter(m[:, 0], m[:, 1], s=3, alpha=0.6, color="tab:red")
        ax[3].set_title(f"{kind}: Gaussian prior model, posterior modes", fontsize=9)
        for a in ax:
            a.set_xlim(-4, 4)
            a.set_ylim(-4, 4)
            a.set_aspect("equal")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
