"""A dependency-free sd_notify client: tells systemd we are ready, alive and stopping.

With Type=notify systemd waits for READY=1 before it calls the service started, and with WatchdogSec it
restarts a daemon whose frame loop stops pinging WATCHDOG=1. Without $NOTIFY_SOCKET every call is a no-op,
so the same code runs from a shell.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()   # abstract namespace socket
        elif address.startswith("/"):
            self._address = address
        self._clock = clock
        self._last_ping = -float("inf")
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_enabled = watchdog_usec.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        # Ping at half the watchdog period as systemd recommends, but no more often than once a second.
        half = int(watchdog_usec) / 2e6 if watchdog_usec.isdigit() else 1.0
        self.ping_interval = min(max(half, 0.0), 1.0)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, state: str) -> bool:
        """Send one state string ("READY=1", "STATUS=…"); False if there is no socket or sending failed."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(state.encode(), self._address)
            return True
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", state, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """WATCHDOG=1, rate-limited so the frame loop can call it every frame."""
        now = self._clock()
        if now - self._last_ping < self.ping_interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_default: Notifier | None = None


def notify(state: str) -> bool:
    """Module-level convenience: send `state` to $NOTIFY_SOCKET (read once); WATCHDOG=1 is rate-limited."""
    global _default
    if _default is None:
        _default = Notifier()
    if state == "WATCHDOG=1":
        return _default.watchdog()
    return _default.notify(state)
