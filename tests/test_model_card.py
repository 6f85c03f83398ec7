"""model.json: the device decides with the thresholds calibrated for the whole view and for crops."""

from __future__ import annotations

import pytest

from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.model.card import ModelCard


def card(**kw) -> ModelCard:
    return ModelCard(label="parcel", image_size=224, threshold=-3.0, sha256="0" * 64, **kw)


def test_thresholds_for_whole_view_and_crops() -> None:
    c = card(threshold_crop=-1.0)
    assert (c.thresholds().whole, c.thresholds().crop) == (-3.0, -1.0)
    # a [model] threshold override moves both by the same amount: their calibrated gap is kept
    assert (c.thresholds(2.5).whole, c.thresholds(2.5).crop) == (2.5, 4.5)
    assert card().thresholds().crop == -3.0  # a model without crop calibration (pixel baseline) uses one threshold


def test_card_from_an_older_schema_is_refused_with_what_to_do() -> None:
    for version in (1, 2):
        data = card().to_dict() | {"schema_version": version}
        with pytest.raises(ModelError, match="retrain"):
            ModelCard.from_dict(data)
    # schema 3 differs only by the class prior's crop weight, whose absence means "as the whole view's"
    assert ModelCard.from_dict(card().to_dict() | {"schema_version": 3}).schema_version == 3


def test_card_from_another_preprocessing_is_refused() -> None:
    data = card().to_dict() | {"preprocessing": "something-else"}
    with pytest.raises(ModelError, match="preprocessing"):
        ModelCard.from_dict(data)
