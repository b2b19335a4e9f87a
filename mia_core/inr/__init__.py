"""INR families, all batched over signals: ``(B, P, d_in) -> (B, P, d_out)``."""

from mia_core.inr.base import INR
from mia_core.inr.composers import ComposersINR
from mia_core.inr.functa import FunctaINR
from mia_core.inr.relu_ff import FourierFeatures, ReluFourierMLP
from mia_core.inr.siren import Siren

__all__ = ["INR", "ComposersINR", "FourierFeatures", "FunctaINR", "ReluFourierMLP", "Siren"]
