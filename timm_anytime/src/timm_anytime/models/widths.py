"""The ``width`` argument every model family takes: its stage widths scaled, rounded and checked."""


def scaled_widths(channels: tuple[int, ...], width: float) -> list[int]:
    """Every resolution stage's width times ``width``, rounded; refuses a stage left empty."""
    widths = [round(c * width) for c in channels]
    if min(widths) < 1:
        raise ValueError(f"width={width} leaves a stage with no channels")
    return widths
