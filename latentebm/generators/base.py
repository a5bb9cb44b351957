"""The Generator protocol: what the core needs of ``p_beta(x | z)``."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Generator(Protocol):
    """A conditional model ``p_beta(x | z)`` (eq. 1 of Pang, Han, Nijkamp, Zhu and Wu (2020),
    "Learning Latent Space Energy-Based Prior Model").

    The learning step needs ``log_likelihood`` (the posterior chain differentiates it with
    respect to z; the generator update differentiates it with respect to beta). Generation
    needs ``sample``. Any ``nn.Module`` with these two methods plugs into :class:`LatentEBM`.
    A generator is built as ``cls(config, z_dim=..., **task.generator_kwargs())`` where
    ``config`` is an instance of its nested ``Config`` dataclass (the recipe's section).
    """

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p_beta(x_i | z_i)`` for each example, shape ``(B,)``.

        It must be the normalised log-likelihood (a Gaussian image generator includes its
        ``-(D/2) log(2 pi tau^2)``) for likelihood and perplexity estimates to be right; the
        Langevin chains and the learning gradients do not depend on the constant.
        """
        ...

    def sample(self, z: Tensor, **decode_opts: Any) -> Any:
        """Decode or sample ``x ~ p_beta(x | z)`` for each row of ``z``."""
        ...
