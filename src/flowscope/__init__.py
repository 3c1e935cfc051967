"""flowscope: build, train, sample and look inside normalizing flows."""

from . import distributions, models, transforms
from .flow import Flow, LogProbParts
from .mixture import MixtureOfFlows

__all__ = ["Flow", "LogProbParts", "MixtureOfFlows", "distributions", "models", "transforms"]
__version__ = "0.1.0"
