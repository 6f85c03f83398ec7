"""GPIO output: a pin that is on while the label is present (a relay, a LED, another board's input).

gpiozero chooses the pin backend (lgpio, rpi-gpio, mock) from GPIOZERO_PIN_FACTORY or the `pin_factory`
argument, so this sink is tested with gpiozero's MockFactory and no Pi.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from gpiozero import DigitalOutputDevice
from gpiozero.exc import BadPinFactory, GPIOZeroError, PinInvalidPin

from device.errors import ConfigError
from device.events import StateChange
from device.sinks.base import Sink

log = logging.getLogger(__name__)

SECTION = "gpio"
# The names gpiozero understands: 17, "17", "GPIO17", "BCM17", "BOARD11", "J8:11", "WPI0" (case-sensitive).
_PIN_NAME = re.compile(r"^(?:(?:GPIO|BCM|BOARD|WPI)\d+|J8:\d+|\d+)$")


@dataclass
class GpioConfig:
    """The `[gpio]` table."""

    pin: int | str
    active_high: bool = True
    initial: bool = False      # output level before the first decision (True = on)

    def __post_init__(self) -> None:
        if isinstance(self.pin, int):
            if self.pin < 0:
                raise ValueError(f"pin {self.pin} must be a GPIO number >= 0 (e.g. 17) or a name like 'GPIO17'")
        elif not _PIN_NAME.match(self.pin.strip()):
            raise ValueError(f"pin {self.pin!r} is not a pin name; use a GPIO number (17) or 'GPIO17', "
                             f"'BOARD11' (physical pin), 'J8:11'")
        else:
            self.pin = self.pin.strip()


class GpioSink(Sink):
    """Drives one output pin: on while present, off while absent, off and released at close()."""

    def __init__(self, cfg: GpioConfig, pin_factory: Any = None) -> None:
        self.cfg = cfg
        try:
            self._device: DigitalOutputDevice | None = DigitalOutputDevice(
                cfg.pin, active_high=cfg.active_high, initial_value=cfg.initial, pin_factory=pin_factory)
        except PinInvalidPin as exc:
            raise ConfigError(f"{SECTION}.pin {cfg.pin!r} does not exist on this board ({exc}); "
                              f"check the pin number (BCM numbering unless 'BOARD…')") from None
        except BadPinFactory as exc:
            raise ConfigError(f"{SECTION}: no GPIO library available ({exc}); install python3-lgpio on the Pi, "
                              f"or remove [gpio] from the config") from None
        except GPIOZeroError as exc:
            raise ConfigError(f"{SECTION}.pin {cfg.pin!r} cannot be used ({exc}); is another program using it?") \
                from None
        log.info("gpio: driving %s (active_%s), initially %s", self._device.pin,
                 "high" if cfg.active_high else "low", "on" if cfg.initial else "off")

    @property
    def is_on(self) -> bool:
        return bool(self._device is not None and self._device.value)

    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        if self._device is None:
            return
        try:
            if change.present:
                self._device.on()
            else:
                self._device.off()
        except Exception:  # a broken pin must not take the frame loop down
            log.exception("gpio: failed to switch %s %s", self.cfg.pin, "on" if change.present else "off")

    def close(self) -> None:
        if self._device is None:
            return
        device, self._device = self._device, None
        try:
            device.off()
        except Exception:
            log.exception("gpio: failed to switch %s off at exit", self.cfg.pin)
        finally:
            device.close()
