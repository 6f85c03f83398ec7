"""model.json: the device picks the threshold calibrated for the way it scores."""

from __future__ import annotations

import pytest

from device.errors import ModelError
from device.model_card import ModelCard


def card(**kw) -> ModelCard:
    return ModelCard(label="parcel", image_size=224, threshold=-3.0, sha256="0" * 64, **kw)


def test_threshold_for_each_scoring_mode() -> None:
    c = card(threshold_tiles=-1.0)
    assert c.threshold_for(tiles=False) == -3.0
    assert c.threshold_for(tiles=True) == -1.0
    assert c.threshold_for(tiles=True, override=2.5) == 2.5
    assert card().threshold_for(tiles=True) == -3.0  # older model.json without a tiles threshold


def test_card_from_another_preprocessing_is_refused() -> None:
    data = card().to_dict() | {"preprocessing": "something-else"}
    with pytest.raises(ModelError, match="preprocessing"):
        ModelCard.from_dict(data)
