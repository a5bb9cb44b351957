"""Data-space short-run EBM (Nijkamp, Hill, Zhu and Wu (2019), "Learning Non-Convergent
Non-Persistent Short-Run MCMC Toward Energy-Based Model"), with the convergent-learning options of
Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of MCMC-Based Maximum Likelihood Learning
of Energy-Based Models".

The negative energy ``f_theta(x)`` is a ConvNet on images; a K-step Langevin chain from uniform
noise is the learned generator ``x = M_theta(z)`` (eq. 5), trained by Algorithm 1.

* :mod:`latentebm.shortrun.config`: the ``family: shortrun`` recipe schema;
* :mod:`latentebm.shortrun.energy`: the ConvNet ``f_theta`` (Nijkamp et al. 2019, Table 4);
* :mod:`latentebm.shortrun.sampler`: the data-space Langevin chain ``M_theta``;
* :mod:`latentebm.shortrun.train`: :class:`ShortRunTrainer` (Algorithm 1, checkpoints, resume);
* :mod:`latentebm.shortrun.tools`: sampling, interpolation and reconstruction (Section 3.4).
"""

from __future__ import annotations

from latentebm.shortrun.config import ShortRunRecipe, load_shortrun_recipe
from latentebm.shortrun.energy import ConvEnergy
from latentebm.shortrun.sampler import ChainResult, ShortRunChain
from latentebm.shortrun.tools import ShortRunModel, interpolate, load_shortrun, reconstruct
from latentebm.shortrun.train import ShortRunTrainer

__all__ = [
    "ChainResult",
    "ConvEnergy",
    "ShortRunChain",
    "ShortRunModel",
    "ShortRunRecipe",
    "ShortRunTrainer",
    "interpolate",
    "load_shortrun",
    "load_shortrun_recipe",
    "reconstruct",
]
