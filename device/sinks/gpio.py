"""GPIO output: a pin that is on while the label is present (a relay, a LED, another board's input).

gpiozero chooses the pin backend (lgpio, rpi-gpio, mock) from GPIOZERO_PIN_FACTORY or the `pin_factory`
argument, so this sink is tested with gpiozero's MockFactory and no Pi.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

from gpiozero import Device, DigitalOutputDevice
from gpiozero.exc import BadPinFactory, GPIOZeroError, PinInvalidPin

from edge_oneclass.device.detect.events import StateChange
from edge_oneclass.device.errors import ConfigError
from edge_oneclass.device.sinks.base import Sink

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


def load_pin_factory() -> Any:
    """The pin factory a DigitalOutputDevice would get: GPIOZERO_PIN_FACTORY, else the first of lgpio, rpigpio,
    pigpio, native that loads. Any failure is a ConfigError saying what to install: it cannot fix itself."""
    try:
        with warnings.catch_warnings(record=True) as fallbacks:   # gpiozero warns once per factory it skips
            warnings.simplefilter("always")
            Device.ensure_pin_factory()
    except Exception as exc:  # noqa: BLE001 - a missing module, no Pi, no permission: all mean "no GPIO here"
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())
        chosen = os.environ.get("GPIOZERO_PIN_FACTORY")
        if chosen is not None:
            raise ConfigError(f"{SECTION}: GPIOZERO_PIN_FACTORY={chosen} cannot be loaded ({cause}); install its "
                              f"library (lgpio: apt install python3-lgpio, venv with --system-site-packages) or "
                              f"unset GPIOZERO_PIN_FACTORY") from None
        raise ConfigError(f"{SECTION}: no GPIO library available ({cause}); install python3-lgpio on the Pi "
                          f"(venv with --system-site-packages), or remove [gpio] from the config") from None
    for fallback in fallbacks:      # it worked: say which factories were skipped, one log line each
        log.warning("gpio: %s", fallback.message)
    return Device.pin_factory


def probe_pin(cfg: GpioConfig) -> str:
    """For `edge-device check`: the pin factory loads and the pin exists on this board; raises ConfigError if not.

    The pin itself is not opened: on every gpiozero backend opening a pin sets its function (lgpio claims it as an
    input, RPi.GPIO and native rewrite its function register), which would release a relay held by a running
    daemon. So `check` leaves the pin exactly as it is.
    """
    factory = load_pin_factory()
    try:
        found = next(iter(factory.board_info.find_pin(cfg.pin)), None)
    except Exception as exc:  # noqa: BLE001 - board detection reads /proc and the device tree
        raise ConfigError(f"{SECTION}: cannot read this board's pins ({type(exc).__name__}: {exc}); "
                          f"is this a Raspberry Pi?") from None
    if found is None:
        raise ConfigError(f"{SECTION}.pin {cfg.pin!r} does not exist on this board ({factory.board_info.description});"
                          f" check the pin number (BCM numbering unless 'BOARD…')")
    header, info = found
    return (f"pin {cfg.pin} is {info.name} ({header.name}:{info.number}) on {factory.board_info.description} via "
            f"{type(factory).__name__}; not opened, so a running daemon's output is left alone")


class GpioSink(Sink):
    """Drives one output pin: on while present, off while absent, off and released at close()."""

    def __init__(self, cfg: GpioConfig, pin_factory: Any = None) -> None:
        self.cfg = cfg
        if pin_factory is None:
            load_pin_factory()      # one line and exit 78 for any factory failure, as `check` reports it
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
