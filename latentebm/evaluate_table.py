"""The table ``latentebm evaluate`` prints: a row per value of the metrics evaluated, with the
settings they depend on (likelihood, text, molecule and image metrics)."""

from __future__ import annotations

from typing import Any

from latentebm.metrics.lm import describe_training


def format_table(result: dict[str, Any]) -> str:
    """The rows printed by ``latentebm evaluate``."""
    metrics = result["metrics"]
    rows: list[tuple[str, str]] = [
        ("split", result["split"]),
        ("checkpoint", f"{result['checkpoint']} (step {result['step']})"),
    ]
    rows += _likelihood_rows(metrics)
    rows += _text_rows(metrics)
    rows += _molecule_rows(metrics)
    rows += _image_rows(metrics)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _likelihood_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    nll, recon, usage = (metrics.get(k) for k in ("marginal_nll", "recon_nll", "latent_usage"))
    if nll is not None:
        settings = nll["settings"]
        se = nll.get("std_error")
        plus_minus = f" ± {se:.3f}" if se is not None else ""
        log_z = nll["log_z"]
        rows += [
            ("examples", f"{nll['n_examples']} ({nll['total_tokens']} tokens)"),
            ("marginal NLL (nats/example)", f"{nll['nll_per_example']:.3f}{plus_minus}"),
            ("marginal NLL (nats/token)", f"{nll['nll_per_token']:.4f}"),
            ("PPL", f"{nll['ppl']:.2f}"),
            (
                "log Z",
                f"{log_z['value']:.4f} ± {log_z['std_error']:.2g} (AIS, {log_z['n_chains']} "
                f"chains x {log_z['n_temperatures']} temperatures)",
            ),
        ]
        if settings["estimator"] == "exact":
            rows.append(("estimator", "exact (no latent variable)"))
        elif settings["estimator"] == "ais" and settings["init"] == "both":
            rows.append(
                (
                    "estimator",
                    f"AIS, the larger of a Laplace start ({settings['n_chains']} chains x "
                    f"{settings['n_temperatures']} temperatures) and the reference path "
                    f"({settings['n_chains']} x {settings['reference_temperatures']}) per "
                    f"example; the reference path's for {nll['reference_share']:.0%} of them; "
                    f"{settings['leapfrog_steps']} leapfrog steps; acceptance "
                    f"{nll['mean_acceptance']:.2f}, mean ESS {nll['mean_ess']:.2f} of "
                    f"{settings['n_chains']}",
                )
            )
        elif settings["estimator"] == "ais" and settings["init"] == "pilot":
            rows.append(
                (
                    "estimator",
                    f"AIS, per example the path a pilot chose: a Laplace start "
                    f"({settings['n_chains']} chains x {settings['n_temperatures']} "
                    f"temperatures) or the reference path ({settings['n_chains']} x "
                    f"{settings['reference_temperatures']}); the reference path for "
                    f"{nll['reference_share']:.0%} of them; {settings['leapfrog_steps']} leapfrog "
                    f"steps; acceptance {nll['mean_acceptance']:.2f}, mean ESS "
                    f"{nll['mean_ess']:.2f} of {settings['n_chains']}",
                )
            )
        elif settings["estimator"] == "ais":
            rows.append(
                (
                    "estimator",
                    f"AIS from {settings['init']}, {settings['n_chains']} chains x "
                    f"{settings['n_temperatures']} temperatures, {settings['leapfrog_steps']} "
                    f"leapfrog steps; acceptance {nll['mean_acceptance']:.2f}, mean ESS "
                    f"{nll['mean_ess']:.2f} of {settings['n_chains']}",
                )
            )
        else:
            rows.append(
                (
                    "estimator",
                    f"importance sampling (fast, looser): {nll['n_importance']} samples, proposal "
                    f"fitted to {settings['n_chains']} chains x {settings['chain_steps']} steps; "
                    f"mean ESS {nll['mean_ess']:.2f} of {nll['n_importance']}",
                )
            )
        rows.append(("marginal NLL seconds", f"{nll['seconds']:.1f}"))
        if not nll["complete"]:
            rows.append(("note", f"{nll['batches']} of {nll['batches_in_split']} batches"))
    if recon is not None:
        rows += [
            (
                "recon NLL (Table 2)",
                f"{recon['recon_nll']:.3f} nats/example, {recon['recon_nll_per_token']:.4f}/token "
                f"(posterior chain of {recon['chain_steps']} steps)",
            ),
            ("prior-z NLL", f"{recon['prior_z_nll']:.3f} (recon gain {recon['recon_gain']:.3f})"),
        ]
    if usage is not None:
        rows += [
            (
                "active units",
                f"{usage['active_units']} of {len(usage['mode_variances'])} (Var > "
                f"{usage['threshold']}, {usage['n_examples']} examples)",
            ),
            (
                "I(x; z)",
                f"{usage['mutual_information']:.3f} nats (max log N = "
                f"{usage['mutual_information_max']:.2f})",
            ),
            ("recon gain", f"{usage['recon_gain']:.3f} nats/example"),
        ]
    return rows


def _text_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    fppl, rppl, bleu = metrics.get("fppl"), metrics.get("rppl"), metrics.get("bleu")
    any_entry = fppl or rppl or bleu
    if any_entry is not None:
        gen = any_entry["generation"]
        steps = "K0" if gen["langevin_steps"] is None else gen["langevin_steps"]
        rows.append(("generation", f"decode {gen['decode']}, prior chain {steps} steps"))
    for entry in (fppl, rppl):
        if entry is not None and "lm" in entry:
            cfg, info = entry["lm"]["config"], entry["lm"]["info"]
            name = "FPPL scorer" if entry is fppl else "RPPL LM"
            rows.append(
                (
                    name,
                    f"LSTM {cfg['embedding_dim']}/{cfg['hidden_dim']}, {describe_training(info)}",
                )
            )
    if fppl is not None:
        rows += [
            ("FPPL", f"{fppl['fppl']:.2f} ({fppl['n_samples']} samples)"),
            ("real-data PPL", f"{fppl['real_ppl']:.2f} (the scorer on the split)"),
        ]
    if rppl is not None:
        rows.append(("RPPL", f"{rppl['rppl']:.2f} (LM on {rppl['rppl_samples']} samples)"))
    if bleu is not None:
        rows += [
            (
                "reconstruction BLEU",
                f"{bleu['reconstruction_bleu']:.2f} ({bleu['reconstruction_sentences']} sentences)",
            ),
            (
                "self-BLEU",
                f"{bleu['self_bleu']:.2f} (real: {bleu['real_self_bleu']:.2f}; "
                f"{bleu['self_bleu_samples']} sentences)",
            ),
            (
                "distinct-1/2/3",
                f"{bleu['distinct_1']:.3f} / {bleu['distinct_2']:.3f} / "
                f"{bleu['distinct_3']:.3f} (real: {bleu['real_distinct_1']:.3f} / "
                f"{bleu['real_distinct_2']:.3f} / {bleu['real_distinct_3']:.3f})",
            ),
            (
                "average length",
                f"{bleu['avg_length']:.1f} words (real: {bleu['real_avg_length']:.1f})",
            ),
        ]
    return rows


MOSES_COLUMNS: tuple[str, ...] = (
    "valid",
    "unique@1000",
    "unique@10000",
    "FCD/Test",
    "FCD/TestSF",
    "SNN/Test",
    "SNN/TestSF",
    "Frag/Test",
    "Frag/TestSF",
    "Scaf/Test",
    "Scaf/TestSF",
    "IntDiv",
    "IntDiv2",
    "Filters",
    "Novelty",
    "logP",
    "SA",
    "QED",
    "weight",
)


def _molecule_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name in ("molecules", "moses"):
        entry = metrics.get(name)
        if entry is None:
            continue
        gen = entry["generation"]
        steps = "K0" if gen["langevin_steps"] is None else gen["langevin_steps"]
        rows.append(
            (
                f"{name} samples",
                f"{entry['n_samples']} (decode {gen['decode']}, prior chain {steps} steps, "
                f"{entry['seconds']:.0f} s)",
            )
        )
        keys = MOSES_COLUMNS if name == "moses" else ("validity", "uniqueness", "novelty")
        for key in keys:
            if key in entry:
                rows.append((key, f"{entry[key]:.4f}"))
    return rows


def _image_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    anomaly, mse, fid = metrics.get("anomaly"), metrics.get("mse"), metrics.get("fid")
    if anomaly is not None:
        rows += [
            (
                "AUPRC",
                f"{anomaly['auprc']:.4f} (average precision {anomaly['average_precision']:.4f})",
            ),
            (
                "anomaly split",
                f"{anomaly['n_anomalous']} anomalous / {anomaly['n_normal']} normal; "
                f"{anomaly['n_chains']} chain(s) x {anomaly['n_steps']} posterior steps, "
                f"{anomaly['seconds']:.0f} s",
            ),
        ]
    if mse is not None:
        rows.append(("reconstruction MSE", _mse_text(mse)))
    if fid is not None:
        rows.append(("FID", f"{fid['fid']:.3f} ({fid['feature']}; {fid['n_samples']} samples)"))
    return rows


def _mse_text(entry: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:.5f}" for key, value in entry.items() if key.startswith("mse"))
