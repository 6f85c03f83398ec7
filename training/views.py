"""The ways training looks at one photo besides the plain one, each ending in the device's `preprocess`.

- mirror: the photo flipped left-right (a dog facing the other way is the same dog).
- grey: the photo without colour, as a camera's night (infrared) mode shows it; without it a colour-trained
  bank finds a greyscale dog unlike every photo it holds.
- crop view: the photo as a motion region or sweep crop shows a subject on the camera: the centre square
  shrunk to `CROP_VIEW_PX` pixels, then brought back up to the model's size by `preprocess`. The smallest
  region the daemon makes is a quarter of the frame's shorter side (90 px on a 640x360 camera), so its crops
  are that blurry; calibrating `threshold_crop` on this view keeps crop scores and their threshold on the
  same footing.
- corner view: a quarter of the photo (half its width and height) in one of its corners, the corner picked from
  the pixels (the same photo always gives the same corner): the scene around the subject, mostly without it.
  Export proves the int8 model ranks whole views like the float one on the photos and these views together,
  the range of frames a camera scores (a frame with the subject and one without).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from edge_oneclass.device.model.preprocess import centre_square

CROP_VIEW_PX = 96

View = Callable[[np.ndarray], np.ndarray]


def mirror(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def grey_mirror(image: np.ndarray) -> np.ndarray:
    return mirror(grey(image))


def crop_view(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    box = centre_square(w, h)
    square = image[box.y:box.y + box.h, box.x:box.x + box.w]
    if box.w <= CROP_VIEW_PX:
        return np.ascontiguousarray(square)
    return cv2.resize(square, (CROP_VIEW_PX, CROP_VIEW_PX), interpolation=cv2.INTER_AREA)


def corner_view(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    corner = int(np.asarray(image[::7, ::7], np.uint32).sum()) % 4
    y, x = (corner // 2) * (h - h // 2), (corner % 2) * (w - w // 2)
    return np.ascontiguousarray(image[y:y + max(1, h // 2), x:x + max(1, w // 2)])
