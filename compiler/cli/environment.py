"""What a command runs in: onnxc's warnings as one line each, SIGTERM unwinding like Ctrl-C, and
libraries kept quiet."""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator


class _WarningLine(logging.Handler):
    """onnxc's own warnings as ``onnxc: warning: ...`` lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"onnxc: warning: {record.getMessage()}", file=sys.stderr)


def show_onnxc_warnings() -> None:
    logger = logging.getLogger("onnxc")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        handler = _WarningLine(logging.WARNING)
        logger.addHandler(handler)


class Terminated(BaseException):
    """SIGTERM, raised where the program is so that every ``finally`` (staged outputs) runs.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def command_environment(debug: bool) -> Iterator[None]:
    """What a command runs in: SIGTERM unwinds like Ctrl-C, and libraries stay quiet.

    Exit 2 promises one stderr line, so Python warnings and library log records (onnx_ir logs its
    complaints about a broken graph) are dropped unless --debug; onnxc's own warnings still show.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    root = logging.getLogger()
    sink = logging.NullHandler()
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
            # A handler on the root logger keeps records from reaching logging's last-resort stderr printer.
            root.addHandler(sink)
        try:
            yield
        finally:
            root.removeHandler(sink)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
