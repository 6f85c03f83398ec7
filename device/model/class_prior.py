"""The label's own ImageNet classes: a term that keeps a cat from scoring like a dog.

The embedding is the backbone's L2-normalised ImageNet logits. The bank and the autoencoder compare it with the
label's photos as a whole vector, so a cat (whose logits share much of their shape with a dog's: furry animal,
four legs, a face) can come close. The backbone's own classifier separates them: a softmax of the logits puts a
dog photo's belief on dog breeds and a cat's on cat classes. Export learns which classes carry the label's photos
(`fit_class_prior`: every class one of the label's photos ranks among its `top` likeliest; for the standard
398-dog model 164 classes, mostly breeds; nothing is hard-coded) and every score gets

    weight * log(share of the view's softmax on those classes)

added: close to 0 for a view that looks like the label's photos to the classifier, strongly negative for one the
classifier calls something else. A label the classifier has no clear classes for spreads its photos over many
classes and the term stays small. The logits' scale is lost in the normalised embedding, so the softmax uses a
fixed `temperature` (the typical logit norm of the backbone).

Why each photo's top few and not the classes that hold most of the photos' mean softmax: with one photo per
breed (118 ImageNet dogs), a breed the other photos do not show fell outside a mass-based set, its photos lost
their share out of fold and the threshold sank (dev no-dog false alarms 9 % -> 21 % leave-one-source-out); a
photo's runners-up are the neighbouring breeds, so the union of top 5 covers breeds no photo shows
(research notes: benchmarks/results/class_prior_choice.json).

Crops get a heavier weight (`crop_weight`, export sets it to `CROP_PRIOR_SCALE` x the whole view's): a crop is
smaller and blurrier than the photos the bank and autoencoder hold, so their part of a crop's score says less,
while the classifier still tells a cat's face from a dog's. Chosen on the dev split: crop weight 1x / 1.5x / 2x / 3x
the whole view's gave the default pipeline 2.4 / 1.5 / 1.2 / 1.0 % false alarms on dev stills at unchanged recall
(benchmarks/results/class_prior_choice.json, `crop_scale` rows), and small dogs' crops lose more of their hits
the heavier it gets; 2x is the knee.

The term is computed here, in float, from the model's embedding output: `Runner.infer` adds it to the score, so
every consumer (the daemon, eval-edge, export's calibration) sees the same score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_oneclass.device.errors import ModelError

EPSILON = 1e-4   # floor of the share, so the term is bounded (weight * log 1e-4)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ClassPrior:
    classes: tuple[int, ...]     # indices into the embedding (ImageNet classes) that carry the label's photos
    temperature: float           # logit norm the normalised embedding is scaled back to before the softmax
    weight: float                # score units per unit of log share
    top: int = 5                 # the classes are those some label photo ranks among its `top` likeliest
    crop_weight: float | None = None   # the weight on crop views; None: the same as `weight` (schema-3 cards)
    _index: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (not self.classes or min(self.classes) < 0 or self.temperature <= 0 or self.weight < 0
                or (self.crop_weight is not None and self.crop_weight < 0)):
            raise ValueError(f"invalid class prior: {len(self.classes)} classes, temperature {self.temperature}, "
                             f"weight {self.weight}, crop weight {self.crop_weight}")
        object.__setattr__(self, "_index", np.asarray(self.classes, dtype=np.intp))

    def log_share(self, embeddings: np.ndarray) -> np.ndarray:
        """log(share of softmax(temperature * e) on the label's classes), for one (D,) or many (n, D) embeddings."""
        p = softmax(self.temperature * np.asarray(embeddings, dtype=np.float64))
        return np.log(p[..., self._index].sum(axis=-1) + EPSILON)

    def weight_for(self, crop: bool) -> float:
        return self.crop_weight if crop and self.crop_weight is not None else self.weight

    def terms(self, embeddings: np.ndarray, crop: bool = False) -> np.ndarray:
        """The term of whole views, or of crop views (`crop`), which carry `crop_weight`."""
        return self.weight_for(crop) * self.log_share(embeddings)

    def term(self, embedding: np.ndarray, crop: bool = False) -> float:
        return float(self.terms(embedding, crop))

    def with_classes_of(self, embeddings: np.ndarray) -> ClassPrior:
        """The same temperature and weights with the classes of other photos (a fold's prior, for calibration)."""
        return fit_class_prior(embeddings, self.temperature, self.weight, self.top, self.crop_weight)

    def to_dict(self) -> dict[str, Any]:
        out = {"classes": list(self.classes), "temperature": self.temperature, "weight": self.weight,
               "top": self.top}
        return out | ({"crop_weight": self.crop_weight} if self.crop_weight is not None else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model.json") -> ClassPrior:
        try:
            crop_weight = data.get("crop_weight")
            return cls(tuple(int(c) for c in data["classes"]), float(data["temperature"]), float(data["weight"]),
                       int(data.get("top", 5)), None if crop_weight is None else float(crop_weight))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: unreadable class_prior ({exc}); re-export the model with export-edge") \
                from None


def fit_class_prior(embeddings: np.ndarray, temperature: float, weight: float, top: int = 5,
                    crop_weight: float | None = None) -> ClassPrior:
    """Every class that one of the label's photos ranks among its `top` likeliest."""
    p = softmax(temperature * np.asarray(embeddings, dtype=np.float64))
    ranked = np.argsort(-p, axis=-1, kind="stable")[:, :top]
    return ClassPrior(tuple(int(c) for c in np.unique(ranked)), float(temperature), float(weight), int(top),
                      None if crop_weight is None else float(crop_weight))
