"""A tqdm bar over Keras epochs: one line that says where training is, instead of Keras' per-epoch log."""

from __future__ import annotations

import keras
from tqdm import tqdm


class EpochBar(keras.callbacks.Callback):
    def __init__(self, epochs: int, desc: str) -> None:
        super().__init__()
        self.bar = tqdm(total=epochs, desc=desc, unit="epoch", dynamic_ncols=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4g}")
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()
