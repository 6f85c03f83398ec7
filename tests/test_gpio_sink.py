"""GpioSink on gpiozero's MockFactory: the pin follows presence, honours active_high, ends off."""

from __future__ import annotations

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from edge_oneclass.device.config_section import parse_section
from edge_oneclass.device.detect.events import Event, StateChange
from edge_oneclass.device.errors import ConfigError
from edge_oneclass.device.sinks.gpio import GpioConfig, GpioSink, probe_pin


def change(present: bool) -> StateChange:
    ev = Event(type="start" if present else "end", label="dog", score=0.9, max_score=0.9, threshold=0.5,
               started_at=0.0, ended_at=None if present else 1.0, frames=3)
    return StateChange(present=present, at=1.0, event=ev)


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def pin_level(factory: MockFactory, name: str = "GPIO17") -> bool:
    return bool(factory.pin(name).state)


@pytest.mark.parametrize("pin", [17, "GPIO17", "BOARD11"])
def test_pin_high_while_present(factory, pin):
    sink = GpioSink(parse_section(GpioConfig, {"pin": pin}, "gpio"), pin_factory=factory)
    assert pin_level(factory) is False
    sink.state_changed(change(True))
    assert pin_level(factory) is True and sink.is_on
    sink.state_changed(change(False))
    assert pin_level(factory) is False and not sink.is_on
    sink.close()


def test_active_low_inverts(factory):
    sink = GpioSink(GpioConfig(pin="GPIO17", active_high=False), pin_factory=factory)
    assert pin_level(factory) is True          # off = high on an active-low relay board
    sink.state_changed(change(True))
    assert pin_level(factory) is False
    sink.state_changed(change(False))
    assert pin_level(factory) is True
    sink.close()


def test_initial_on(factory):
    sink = GpioSink(GpioConfig(pin=17, initial=True), pin_factory=factory)
    assert pin_level(factory) is True
    sink.close()


def test_close_leaves_it_off_and_released(factory):
    sink = GpioSink(GpioConfig(pin=17), pin_factory=factory)
    sink.state_changed(change(True))
    sink.close()
    assert pin_level(factory) is False
    sink.close()                              # idempotent
    sink.state_changed(change(True))          # after close: ignored
    again = GpioSink(GpioConfig(pin=17), pin_factory=factory)   # the pin was released
    again.close()


@pytest.mark.parametrize("data, needle", [
    ({}, "missing key gpio.pin"),
    ({"pin": 17, "colour": "red"}, "unknown key gpio.colour"),
    ({"pin": True}, "gpio.pin must be int or str"),
    ({"pin": "pin17"}, "'pin17' is not a pin name"),
    ({"pin": -1}, "pin -1"),
    ({"pin": 17, "active_high": "yes"}, "gpio.active_high must be bool"),
])
def test_config_errors(data, needle):
    with pytest.raises(ConfigError) as exc:
        parse_section(GpioConfig, data, "gpio")
    assert needle in str(exc.value)


def test_pin_not_on_board_is_config_error(factory):
    with pytest.raises(ConfigError, match=r"gpio.pin 'GPIO99' does not exist"):
        GpioSink(GpioConfig(pin="GPIO99"), pin_factory=factory)


def test_pin_in_use_is_config_error(factory):
    first = GpioSink(GpioConfig(pin=17), pin_factory=factory)
    with pytest.raises(ConfigError, match="gpio.pin 17 cannot be used"):
        GpioSink(GpioConfig(pin=17), pin_factory=factory)
    first.close()


@pytest.fixture
def default_factory():
    """gpiozero's process-wide default factory set to a MockFactory, as GPIOZERO_PIN_FACTORY=mock would."""
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


def test_probe_finds_the_pin_without_opening_it(default_factory):
    """`check` must not open the pin: on real backends that resets it (and a running daemon's relay with it)."""
    detail = probe_pin(GpioConfig(pin="BOARD11"))
    assert "pin BOARD11 is GPIO17 (J8:11)" in detail and "MockFactory" in detail
    assert default_factory.pins == {}                  # no Pin object was created, so nothing was claimed
    with pytest.raises(ConfigError, match=r"gpio.pin 'GPIO99' does not exist on this board \(Raspberry Pi"):
        probe_pin(GpioConfig(pin="GPIO99"))


def test_a_pin_factory_that_cannot_load_is_one_config_error(monkeypatch):
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    for attempt in (lambda: probe_pin(GpioConfig(pin=17)), lambda: GpioSink(GpioConfig(pin=17))):
        with pytest.raises(ConfigError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith("gpio: GPIOZERO_PIN_FACTORY=no-such-factory cannot be loaded (BadPinFactory: ")
        assert "unset GPIOZERO_PIN_FACTORY" in message and "\n" not in message
        assert info.value.exit_code == 78
