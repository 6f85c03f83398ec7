"""Confidence: a frame's score as a number in 0..1 that reads the same for every model.

Raw scores are on each model's own scale (the brightness fixture's are 0..1, a trained model's are
log-densities that can be any real number), so Home Assistant users get one extra figure:

    confidence = logistic((score - threshold) / scale) = 1 / (1 + exp(-(score - threshold) / scale))

- exactly 0.5 at the threshold, so "present" (score >= threshold) is "confidence >= 0.5" for the whole view;
- strictly increasing in the score, so it ranks frames exactly as the score does;
- `scale` (> 0) is how many score units move the confidence from 0.5 to 0.73 (one logistic unit).

The scale, in order of preference (`confidence_scale`):
1. `confidence_scale` in model.json, written by `export-edge`: (median - threshold) / ln(19) of the label photos'
   out-of-fold whole-view scores, so the median label photo maps to 0.95 (logistic(ln 19) = 19/20); the
   standard deviation of those scores when the median is not above the threshold;
2. older cards: the same formula from `calibration.positive_quantiles["p50"]` and the card's threshold;
3. otherwise 1.0.
A `[model] threshold` override moves the 0.5 point and keeps the scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

LN19 = math.log(19.0)
DEFAULT_SCALE = 1.0


def confidence(score: float, threshold: float, scale: float = DEFAULT_SCALE) -> float:
    """logistic((score - threshold) / scale) in 0..1; 0.5 at the threshold; NaN scores give 0.0."""
    if score is None or math.isnan(score):
        return 0.0
    if not (scale > 0 and math.isfinite(scale)):
        scale = DEFAULT_SCALE
    z = (float(score) - float(threshold)) / scale
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)     # no overflow for very negative z
    return e / (1.0 + e)


def scale_from_scores(scores: Any, threshold: float) -> float | None:
    """What `export-edge` writes as `confidence_scale`: (median - threshold) / ln 19 of the label photos'
    out-of-fold scores, or their standard deviation when the median is not above the threshold; None if neither
    is a positive finite number."""
    import numpy as np

    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return None
    spread = (float(np.median(x)) - float(threshold)) / LN19
    if not (spread > 0 and math.isfinite(spread)):
        spread = float(np.std(x))
    return spread if spread > 0 and math.isfinite(spread) else None


def confidence_scale(card: Any) -> float:
    """The scale for a ModelCard (or anything with `confidence_scale`, `threshold` and `calibration`)."""
    explicit = getattr(card, "confidence_scale", None)
    if isinstance(explicit, (int, float)) and not isinstance(explicit, bool) and math.isfinite(explicit) \
            and explicit > 0:
        return float(explicit)
    calibration = getattr(card, "calibration", None) or {}
    quantiles = calibration.get("positive_quantiles") if isinstance(calibration, Mapping) else None
    if isinstance(quantiles, Mapping):
        try:
            p50, threshold = float(quantiles["p50"]), float(card.threshold)
        except (KeyError, TypeError, ValueError):
            return DEFAULT_SCALE
        spread = (p50 - threshold) / LN19
        if spread > 0 and math.isfinite(spread):
            return spread
    return DEFAULT_SCALE
