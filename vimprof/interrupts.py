"""SIGINT, SIGTERM and SIGHUP all stop a long-running command the way Ctrl-C does.

`timeout`, CI runners, systemd and container runtimes stop a process with SIGTERM; a closed
terminal sends SIGHUP. Python's default for both is to die at once, which leaves the in-flight
instance running and the run directory without an end. With `install()` the first of these
signals raises `Interrupted` (a KeyboardInterrupt, so every Ctrl-C path cleans up the same way:
in-flight instance deleted, capture closed, manifest marked interrupted), and the command exits
with 128 + the signal's number (the shell's convention: 130 for SIGINT, 143 for SIGTERM, 129 for
SIGHUP).

A further signal while the clean-up runs does not interrupt it (that would leak the instance or
leave a half-written file): it prints what is still being cleaned, as registered by
`cleaning(...)`. SIGKILL cannot be caught; `vimprof clean` deletes what such a run left.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_received: int | None = None
_cleaning: list[str] = []
_on_first: Callable[[], None] | None = None
_shield = 0  # depth of shielded() blocks
_pending = False  # a first signal arrived inside one: raised when the outermost ends


class Interrupted(KeyboardInterrupt):
    """The first SIGINT, SIGTERM or SIGHUP; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handler(signum: int, _frame: Any) -> None:
    global _received, _pending
    if _received is None:
        _received = signum
        if _on_first is not None:  # the command stops by itself (stop_with)
            _on_first()
            return
        if _shield:
            _pending = True
            return
        raise Interrupted(signum)
    what = "; ".join(_cleaning) or "writing what was recorded"
    sys.stderr.write(f"vimprof: {signal.Signals(signum).name} again: still cleaning up "
                     f"({what}); it ends by itself (SIGKILL would leave instances for "
                     "`vimprof clean`)\n")
    sys.stderr.flush()


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP through `_handler` (main thread only: Python delivers
    signals there; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _handler)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """`install()` for the duration of a block, restoring the handlers found (library use:
    `analyze_run_follow(...)` called from a test or a notebook). A no-op where vimprof's
    handlers are installed already (the CLI), so a signal received stays recorded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in SIGNALS}
    ours = all(h is _handler for h in old.values())
    if not ours:
        reset()
        install()
    try:
        yield
    finally:
        if not ours:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def reset() -> None:
    """Forget a received signal (tests running several commands in one process)."""
    global _received, _on_first, _shield, _pending
    _received, _on_first, _shield, _pending = None, None, 0, False
    _cleaning.clear()


def received() -> str | None:
    """Name of the first signal received ("SIGTERM" ...), None when there was none."""
    return signal.Signals(_received).name if _received is not None else None


def exit_status() -> int:
    """128 + the number of the signal received (130 when none was: a plain Ctrl-C)."""
    return 128 + (_received if _received is not None else signal.SIGINT)


@contextlib.contextmanager
def stop_with(callback: Callable[[], None]) -> Iterator[None]:
    """Inside this block the first signal calls `callback` (which makes the command wind down
    by itself, e.g. `vimprof analyze --follow` stops reading) instead of raising."""
    global _on_first
    old, _on_first = _on_first, callback
    try:
        yield
    finally:
        _on_first = old


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A block a first signal does not cut in half (closing a capture, writing the end
    manifest): the signal is recorded and raised as Interrupted when the block ends."""
    global _shield, _pending
    _shield += 1
    try:
        yield
    finally:
        _shield -= 1
    if _shield == 0 and _pending:
        _pending = False
        raise Interrupted(_received or signal.SIGINT)


@contextlib.contextmanager
def cleaning(what: str) -> Iterator[None]:
    """Declare a clean-up step ("deleting job vimprof-x-0003"): a second signal names it."""
    _cleaning.append(what)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _cleaning.remove(what)
