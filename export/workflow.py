"""`train-edge DOGS_DIR`: train the model, then export and calibrate it (the one workstation command).

It lives here, not in training/, so the layers point one way: export uses training's results, training never
imports export.
"""

from __future__ import annotations

import sys

from edge_oneclass.device.console import run_main, setup_logging
from edge_oneclass.device.errors import require_modules
from edge_oneclass.training.cli import INSTALL_TRAIN, TRAIN_MODULES, parse_args
from edge_oneclass.training.tf_quiet import import_tensorflow_quietly, quiet_native_logging


def main(argv: list[str] | None = None) -> int:
    quiet_native_logging()
    args = parse_args(argv)
    setup_logging()

    def job() -> int:
        require_modules(TRAIN_MODULES, INSTALL_TRAIN)   # before the folder scan: fail in a second, in one line
        import_tensorflow_quietly()   # before anything below imports it: TensorFlow's start-up notices stay off
        from edge_oneclass.export.pipeline import export_model
        from edge_oneclass.training.train import TrainOptions, train

        out = train(TrainOptions(images=args.images, out=args.out, label=args.label, background=args.background,
                                 backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                                 target_recall=args.target_recall, seed=args.seed))
        export_model(out)
        print(f"model written to {out}/ (model.tflite, model.json, calibration.npz, report.html)")
        return 0

    return run_main("train-edge", job)


if __name__ == "__main__":
    sys.exit(main())
