"""Shared fixtures: the real Nomad lab, brought up once per test session and torn down after."""

from __future__ import annotations

import fcntl
import os
import shutil

import pytest

# One Nomad lab per machine: concurrent pytest sessions (CI plus a developer) take turns.
LAB_LOCK = "/tmp/vimprof-nomad-lab.lock"


def lab_unavailable() -> str | None:
    """Why the real lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Nomad lab needs root (network namespaces)"
    for tool in ("ip", "tcpdump", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/setup"
    return None


@pytest.fixture(scope="session")
def lab_lock():
    """Hold the machine-wide lab lock for the rest of the session (blocks while another has it)."""
    with open(LAB_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@pytest.fixture
def lab_possible(lab_lock) -> None:
    """Skip unless the real lab can run here."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def nomad_lab(lab_lock):
    """A running Nomad lab (vimprof.lab.nomad.LabState); down at the end of the session."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    from vimprof.lab import nomad as lab

    state = lab.up()
    yield state
    lab.down()
