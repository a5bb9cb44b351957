"""Can the EBM prior learner fit the ground-truth prior when it is given the true latents?

    python benchmarks/prior_learning.py                          # the recipes' settings
    python benchmarks/prior_learning.py --lr 1e-4,1e-3 --steps 3000,10000 --json out.json

The joint runs of ``benchmarks/ground_truth.py`` learn the prior from short-run posterior
samples. This check removes the posterior and the generator: it runs only the prior half of
Algorithm 1 of Pang et al. (2020), the update of eq. (10),

    alpha <- alpha + eta_0 * (mean f_alpha(z+) - mean f_alpha(z-)),

with ``z+`` drawn exactly from the true prior (the ring of 8 Gaussian modes of
:mod:`latentebm.ground_truth`) in place of the posterior chain, and ``z-`` from the K0-step
short-run prior chain of the recipe (:class:`latentebm.langevin.LangevinSampler`, Table 5:
K0 = 60, s0 = 0.4), with the recipe's MLP (:class:`latentebm.prior.EnergyPrior`, Table 6) and
optimiser (Adam, eta_0 = 1e-4, betas (0.5, 0.999)).

It reports the mean ``-log p(z)`` of 10,000 fresh true latents under ``N(0, I)``, the learned
EBM prior (``log Z`` by quadrature on a 2-D grid) and the true prior, and the share of the
Gaussian's gap to the truth that the EBM closes. If the learner closes most of it here but not
in the joint runs, the joint learning (posterior samples, generator) is what stops it.

Remedies for non-convergent short-run learning (Nijkamp et al., "On the anatomy of MCMC-based
maximum likelihood learning of energy-based models"), each a toolkit setting:

    --init persistent      prior chains start from a replay buffer (``prior_chain.init:
                           persistent``, :class:`latentebm.replay.ReplayBuffer`)
    --lr-final 1e-6        the learning rate decays exponentially from ``--lr`` to this
    --k0 200               longer chains from N(0, I)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import write_record  # noqa: E402

from latentebm.ground_truth import GroundTruthConfig  # noqa: E402
from latentebm.langevin import LangevinSampler, eval_mode, frozen  # noqa: E402
from latentebm.mixture_prior import GaussianMixturePrior  # noqa: E402
from latentebm.prior import EnergyPrior, GaussianPrior  # noqa: E402
from latentebm.replay import ReplayBuffer  # noqa: E402


def grid_log_z(prior: GaussianPrior, limit: float = 7.0, points: int = 301) -> float:
    """``log Z = log int exp(f(z)) N(z; 0, sigma^2 I) dz`` by the midpoint rule in 2-D."""
    axis = (torch.arange(points, dtype=torch.float64) + 0.5) / points * 2 * limit - limit
    grid = torch.cartesian_prod(axis, axis).float()
    with torch.no_grad(), eval_mode(prior):
        log_tilted = prior.energy(grid).double() + prior.log_reference(grid).double()
    return float(torch.logsumexp(log_tilted, 0)) + math.log((2 * limit / points) ** 2)


def nll(prior: GaussianPrior, z: Tensor) -> float:
    """Mean ``-log p(z)`` of a prior ``exp(f) N / Z`` (``Z`` on the grid)."""
    with torch.no_grad(), eval_mode(prior):
        log_tilted = prior.energy(z).double() + prior.log_reference(z).double()
    return float(-(log_tilted.mean() - grid_log_z(prior)))


def learn(
    true_prior: GaussianMixturePrior,
    *,
    steps: int,
    lr: float,
    k0: int,
    s0: float,
    batch_size: int,
    seed: int,
    evaluate_at: list[int],
    z_test: Tensor,
    init: str = "noise",
    buffer_size: int = 10_000,
    reinit_rate: float = 0.05,
    lr_final: float | None = None,
) -> list[dict[str, Any]]:
    """Eq. (10) with exact positive samples; ``-log p`` of ``z_test`` at each step in
    ``evaluate_at``. ``init``: ``noise`` (chains from ``N(0, I)``) or ``persistent`` (from a
    replay buffer of ``buffer_size`` with ``reinit_rate``); ``lr_final``: exponential decay of
    the learning rate from ``lr`` to it over ``steps``."""
    torch.manual_seed(seed)
    prior = EnergyPrior(2, hidden_dims=(200, 200), negative_slope=0.2)
    chain = LangevinSampler(n_steps=k0, step_size=s0)
    optimizer = torch.optim.Adam(prior.parameters(), lr=lr, betas=(0.5, 0.999))
    decay = (lr_final / lr) ** (1.0 / steps) if lr_final is not None else 1.0
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, decay)
    buffer = ReplayBuffer(buffer_size, 2, reinit_rate) if init == "persistent" else None
    generator = torch.Generator().manual_seed(seed)

    def reference(n: int) -> Tensor:
        return prior.sample_reference(n, generator=generator)

    rows = []
    started = time.process_time()
    for step in range(1, steps + 1):
        z_pos = true_prior.sample(batch_size, generator=generator)
        if buffer is not None:
            indices, z_init = buffer.draw(batch_size, reference, generator)
        else:
            z_init = reference(batch_size)
        with frozen(prior):
            z_neg = chain.run(prior.log_density, z_init, generator=generator).z
        if buffer is not None:
            buffer.update(indices, z_neg)
        loss = prior.energy(z_neg).mean() - prior.energy(z_pos).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step in evaluate_at:
            rows.append(
                {
                    "step": step,
                    "lr": lr,
                    "lr_final": lr_final,
                    "init": init,
                    "reinit_rate": reinit_rate if buffer is not None else None,
                    "k0": k0,
                    "s0": s0,
                    "nll_ebm": nll(prior, z_test),
                    "cpu_seconds": time.process_time() - started,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="3000", help="evaluate after these updates (comma)")
    parser.add_argument("--lr", default="1e-4", help="prior learning rates eta_0 (comma)")
    parser.add_argument("--k0", type=int, default=60)
    parser.add_argument("--s0", type=float, default=0.4)
    parser.add_argument("--init", choices=("noise", "persistent"), default="noise")
    parser.add_argument("--buffer-size", type=int, default=10_000)
    parser.add_argument("--reinit-rate", type=float, default=0.05)
    parser.add_argument("--lr-final", type=float, default=None, help="exponential decay to this")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    marks = sorted(int(s) for s in args.steps.split(","))
    config = GroundTruthConfig()
    true_prior = GaussianMixturePrior.ring(config.n_modes, config.radius, config.component_std)
    z_test = true_prior.sample(10_000, generator=torch.Generator().manual_seed(12345))
    nll_true = float(-true_prior.log_prob(z_test).double().mean())
    nll_gauss = nll(GaussianPrior(2), z_test)
    rows = []
    for lr in (float(v) for v in args.lr.split(",")):
        for row in learn(
            true_prior,
            steps=marks[-1],
            lr=lr,
            k0=args.k0,
            s0=args.s0,
            batch_size=args.batch_size,
            seed=args.seed,
            evaluate_at=marks,
            z_test=z_test,
            init=args.init,
            buffer_size=args.buffer_size,
            reinit_rate=args.reinit_rate,
            lr_final=args.lr_final,
        ):
            row["share_closed"] = (nll_gauss - row["nll_ebm"]) / (nll_gauss - nll_true)
            rows.append(row)
    print(f"-log p(z) of 10,000 true latents: true prior {nll_true:.3f}, N(0, I) {nll_gauss:.3f}")
    print("| chains | eta_0 | updates | EBM prior -log p(z) | share of the gap closed | CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        lr = f"{r['lr']:g}" + (f" -> {r['lr_final']:g}" if r["lr_final"] is not None else "")
        print(
            f"| {r['init']}, K0 = {r['k0']} | {lr} | {r['step']:,} | {r['nll_ebm']:.3f} "
            f"| {100 * r['share_closed']:.0f} % | {r['cpu_seconds']:.0f} |"
        )
    if args.json is not None:
        write_record(
            args.json,
            "prior_learning.py",
            argv,
            args.threads,
            nll_true=nll_true,
            nll_gaussian=nll_gauss,
            batch_size=args.batch_size,
            rows=rows,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
