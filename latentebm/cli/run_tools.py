"""The commands that look at a trained run besides measuring it: ``diagnose`` (the learning
diagnostics of Nijkamp et al. 2020), ``plot`` (training curves) and ``export`` (the model as a
small folder to share or load).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    """``latentebm export RUN DIR``: the model (a latent EBM or a data-space short-run EBM) as a
    small folder to share or load."""
    from latentebm.export import export_model, read_card_fields

    card = read_card_fields(args.card)
    out = export_model(args.run, args.out, card=card)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"exported to {out} ({size / 1e6:.1f} MB): load it with latentebm.load({str(out)!r})")
    return 0


def _fmt(value: object, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def cmd_plot(args: argparse.Namespace) -> int:
    """``plot``: the training curves of a run as a PNG (:mod:`latentebm.curves`)."""
    from latentebm.curves import plot_training_curves
    from latentebm.plotting import PlotDependencyError

    out = Path(args.output) if args.output else Path(args.run) / "curves.png"
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    try:
        drawn = plot_training_curves(args.run, out, keys)
    except PlotDependencyError as error:
        print(f"latentebm: error: {error}", file=sys.stderr)
        return 2
    print(f"{', '.join(drawn)} -> {out}", file=sys.stderr)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """``diagnose``: the learning diagnostics of Nijkamp, Hill, Han, Zhu and Wu (2020), "On the
    Anatomy of MCMC-Based Maximum Likelihood Learning of Energy-Based Models" (``d_t``, ``r_t``,
    oscillation, a long prior chain), plus latent usage; see :mod:`latentebm.diagnostics`."""
    from latentebm.diagnostics import diagnose

    result = diagnose(
        args.run,
        out_dir=args.output,
        n_chains=args.chains,
        n_steps=args.long_chain_steps,
        seed=args.seed,
        usage_examples=args.usage_examples,
        device=args.device,
    )
    osc = result["oscillation"] or {}
    chain = result["long_chain"] or {}
    rows = [
        ("logged training rows", _fmt(result["n_train_rows"], "d")),
        ("d_t mean", _fmt(osc.get("mean"))),
        ("d_t std", _fmt(osc.get("std"))),
        ("d_t sign-change fraction", _fmt(osc.get("sign_change_fraction"), ".3f")),
        ("d_t lag-1 autocorrelation", _fmt(osc.get("lag1_autocorrelation"), ".3f")),
        ("oscillation (Nijkamp et al. 2020)", osc.get("label", "-")),
        ("r_t prior chain (mean)", _fmt(result["r_t"]["prior"])),
        ("r_t posterior chain (mean)", _fmt(result["r_t"]["posterior"])),
    ]
    nijkamp = result["nijkamp"]
    rows += [
        ("d_t, Nijkamp et al. 2020 sign", _fmt(nijkamp["d_t_mean"])),
        ("r_t prior, Nijkamp scale", _fmt(nijkamp["r_t_prior"])),
        ("r_t posterior, Nijkamp scale", _fmt(nijkamp["r_t_posterior"])),
        ("  (mapping)", nijkamp["mapping"]),
    ]
    step = result.get("prior_chain_step")
    if step:
        rows += [
            (
                "prior chain step index rho, first / last tenth",
                f"{step['rho_first']:.3g} / {step['rho_last']:.3g}",
            ),
            (
                "  variance sampled / a Gaussian's (last)",
                f"{step['variance_inflation_last']:.3g}x "
                f"(a^2 at {100 * step['bound_fraction_last']:.0f} % of its stability bound 4 v)",
            ),
        ]
    usage = result.get("latent_usage")
    if usage:
        rows += [
            (
                f"active units ({usage['n_examples']} valid examples)",
                f"{usage['active_units']} of {len(usage['mode_variances'])}",
            ),
            ("I(x; z) (nats)", _fmt(usage["mutual_information"], ".3f")),
            ("recon gain (nats/example)", _fmt(usage["recon_gain"], ".3f")),
        ]
    if chain:
        rows += [
            (f"long chain f(z), step 0 ({chain['n_chains']} chains)", _fmt(chain["energy_start"])),
            (f"long chain f(z), step {chain['n_steps']}", _fmt(chain["energy_end"])),
        ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if step and step["advice"]:
        print(f"warning: {step['advice']}")
    if result["plots_skipped"]:
        print(f"diagnostics.json -> {result['out_dir']} (plots skipped: {result['plots_skipped']})")
    else:
        print(f"plots and diagnostics.json -> {result['out_dir']}")
    return 0
