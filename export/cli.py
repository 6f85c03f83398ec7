"""`export-edge MODEL_DIR`: re-run the int8 export of a trained model directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_oneclass.device.console import run_main, setup_logging
from edge_oneclass.device.errors import require_modules
from edge_oneclass.training.cli import INSTALL_TRAIN, TRAIN_MODULES
from edge_oneclass.training.tf_quiet import import_tensorflow_quietly


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="export-edge", description="Convert a train-edge model folder to an int8 "
                                "TFLite model, prove it scores like the float one, and calibrate its threshold.")
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    p.add_argument("--out", type=Path, metavar="FILE", help="TFLite file to write (default MODEL_DIR/model.tflite); "
                   "model.json is written beside it")
    args = p.parse_args(argv)
    setup_logging()

    def job() -> int:
        require_modules(TRAIN_MODULES, INSTALL_TRAIN)   # one line on a device-only install, not a traceback
        import_tensorflow_quietly()
        from edge_oneclass.export.pipeline import export_model

        card = export_model(args.model_dir, args.out)
        whole = card.parity.get("whole") or {}
        print(f"int8 model: threshold {card.threshold:.5g}, float/int8 Spearman "
              f"{card.parity['spearman_float_vs_int8']:.4f} on crop views"
              + (f", {whole['spearman_float_vs_int8']:.4f} on whole views" if whole else ""))
        return 0

    return run_main("export-edge", job)


if __name__ == "__main__":
    sys.exit(main())
