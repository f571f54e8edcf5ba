"""Anytime inference for deployment: answer by a deadline, or exit early when confident.

```python
from timm_anytime.inference import EarlyExit, predict_within

ee = EarlyExit.calibrate(model, val_loader, budget=0.5)  # average cost / cost of every stage
logits, stages = ee(x)  # per input: the logits of its exit stage, and that stage (1-based)
logits, stage = predict_within(model, x, seconds=0.004)  # the last stage finished in time
```
"""

from .early_exit import SCORES, EarlyExit, budget_curve, calibrate_thresholds, exit_stages, relative_stage_costs
from .realtime import measure_stage_seconds, predict_within

__all__ = [
    "SCORES",
    "EarlyExit",
    "budget_curve",
    "calibrate_thresholds",
    "exit_stages",
    "measure_stage_seconds",
    "predict_within",
    "relative_stage_costs",
]
