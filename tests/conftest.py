"""Shared fixtures: the real Nomad lab, brought up once per test session and torn down after."""

from __future__ import annotations

import fcntl

import pytest
from labtools import lab_unavailable

# One Nomad lab per machine: concurrent pytest sessions (CI plus a developer) take turns.
LAB_LOCK = "/tmp/vimprof-nomad-lab.lock"


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
