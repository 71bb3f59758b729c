"""vimprof.interrupts: SIGTERM and SIGHUP act as Ctrl-C, a second signal never cuts a clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from vimprof import interrupts


@pytest.fixture
def handlers():
    """vimprof's handlers for the test, the previous ones (pytest's) restored after."""
    old = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.reset()
    interrupts.install()
    yield
    for s, h in old.items():
        signal.signal(s, h)
    interrupts.reset()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_first_signal_raises_keyboard_interrupt_with_its_name(handlers, sig):
    with pytest.raises(KeyboardInterrupt) as info:
        os.kill(os.getpid(), sig)
        signal.sigtimedwait([], 0)  # let the handler run
    assert isinstance(info.value, interrupts.Interrupted)
    assert interrupts.received() == signal.Signals(sig).name
    assert interrupts.exit_status() == 128 + sig


def test_second_signal_during_cleanup_names_it_and_does_not_raise(handlers, capsys):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
    done = False
    with interrupts.cleaning("deleting job vimprof-x-0001"):
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0)
        done = True
    assert done
    err = capsys.readouterr().err
    assert "SIGINT again" in err and "deleting job vimprof-x-0001" in err
    assert interrupts.received() == "SIGTERM"  # the first one decides the exit status


def test_shielded_block_finishes_then_raises(handlers):
    steps = []
    with pytest.raises(interrupts.Interrupted), interrupts.shielded():
        os.kill(os.getpid(), signal.SIGHUP)
        signal.sigtimedwait([], 0)
        steps.append("manifest written")
    assert steps == ["manifest written"]
    assert interrupts.received() == "SIGHUP"


def test_stop_with_calls_back_instead_of_raising(handlers):
    stopped = []
    with interrupts.stop_with(lambda: stopped.append(True)):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
    assert stopped == [True]
    assert interrupts.exit_status() == 143


def test_no_signal_exit_status_is_ctrl_c():
    interrupts.reset()
    assert interrupts.received() is None and interrupts.exit_status() == 130


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_cli_process_exits_128_plus_signal(sig, tmp_path):
    """A vimprof command blocked in Python gets the signal: clean exit with 128 + signal."""
    code = textwrap.dedent("""
        import sys, time, click
        from vimprof import cli
        @cli.cli.command("sleepy")
        def sleepy():
            print("ready", flush=True)
            time.sleep(30)
        sys.argv = ["vimprof", "sleepy"]
        cli.main()
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(sig)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 128 + sig, err
