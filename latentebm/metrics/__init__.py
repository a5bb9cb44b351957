"""Evaluation metrics: importance-sampled marginal likelihood (NLL) and perplexity.

See :mod:`latentebm.metrics.nll` for the estimator, what it bounds and how it is tested.
"""

from latentebm.metrics.nll import (
    GaussianProposal,
    LogPartitionEstimate,
    NLLResult,
    estimate_log_likelihood,
    evaluate_nll,
    fit_gaussian,
    fit_proposal,
    importance_log_weights,
    log_joint,
    log_partition,
    log_prior_density,
)

__all__ = [
    "GaussianProposal",
    "LogPartitionEstimate",
    "NLLResult",
    "estimate_log_likelihood",
    "evaluate_nll",
    "fit_gaussian",
    "fit_proposal",
    "importance_log_weights",
    "log_joint",
    "log_partition",
    "log_prior_density",
]
