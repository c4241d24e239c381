"""Arithmetic on measured figures: a tiny run can measure zero CPU (psutil counts 10 ms ticks)."""

from __future__ import annotations

import math


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or NaN when the denominator measured nothing."""
    return numerator / denominator if denominator else math.nan
