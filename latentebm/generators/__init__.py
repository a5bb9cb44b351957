"""Generators ``p_beta(x | z)``: the protocol and the built-in implementations."""

from latentebm.generators.base import Generator
from latentebm.generators.lstm import LSTMDecoder

__all__ = ["Generator", "LSTMDecoder"]
