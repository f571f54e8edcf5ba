"""timm-anytime: nested anytime networks as timm models (work in progress).

Today this package only exposes the optimizer it trains with; the models, trainer and Hub support
land in later releases (see the repository README).
"""

from osgd import OSGD, combine

__version__ = "0.1.0"

__all__ = ["OSGD", "combine"]
