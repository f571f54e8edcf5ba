"""Training anytime networks with the paper's methods, on one device or many (Accelerate)."""

from .config import METHODS, TrainConfig, config_from_args
from .methods import Phase, plan_phases
from .trainer import NonFiniteLossError, Trainer, train

__all__ = [
    "METHODS",
    "NonFiniteLossError",
    "Phase",
    "TrainConfig",
    "Trainer",
    "config_from_args",
    "plan_phases",
    "train",
]
