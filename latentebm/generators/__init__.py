"""Generators ``p_beta(x | z)``: the protocol and the built-in implementations."""

from latentebm.generators.base import Generator
from latentebm.generators.lstm import LSTMDecoder
from latentebm.generators.transformer import TransformerDecoder

__all__ = ["Generator", "LSTMDecoder", "TransformerDecoder"]
