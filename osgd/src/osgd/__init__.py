"""osgd: combine per-task gradients (Orthogonalized SGD, NormSGD, weighted sum) for any optimizer.

Implements the optimizers of Wan et al., "Orthogonalized SGD and Nested Architectures for Anytime
Neural Networks" (ICML 2020). Depends on torch only.
"""

from .combine import combine, combine_with_info, gram_matrix
from .methods import DEFAULT_REDUCTION, METHODS, REDUCTIONS, CombineInfo, Combiner, gram_schmidt
from .optimizer import OSGD, NonFiniteGradientError, ParamMasks, TaskLoss

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REDUCTION",
    "METHODS",
    "OSGD",
    "REDUCTIONS",
    "CombineInfo",
    "Combiner",
    "NonFiniteGradientError",
    "ParamMasks",
    "TaskLoss",
    "combine",
    "combine_with_info",
    "gram_matrix",
    "gram_schmidt",
]
