"""Training anytime networks with the paper's methods, on one device or many (Accelerate)."""

from .config import TrainConfig, config_from_args
from .methods import METHODS, TABLE, Method, Phase, plan_phases
from .trainer import NonFiniteLossError, Trainer, train

__all__ = [
    "METHODS",
    "TABLE",
    "Method",
    "NonFiniteLossError",
    "Phase",
    "TrainConfig",
    "Trainer",
    "config_from_args",
    "plan_phases",
    "train",
]
