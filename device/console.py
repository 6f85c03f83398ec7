"""The one wrapper every console script runs in: user-fixable errors become one line and an exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from edge_oneclass.device.errors import EdgeError


def setup_logging(level: str | int = "INFO") -> None:
    """One line per record on stderr; under systemd the journal adds its own timestamps."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)


def run_main(prog: str, fn: Callable[[], int | None]) -> int:
    """Run `fn`; an EdgeError prints as `prog: message` (no traceback) and returns its exit code."""
    try:
        return int(fn() or 0)
    except EdgeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
