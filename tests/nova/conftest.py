"""Fixtures of the Nova integration tests: the real OpenStack lab (vimprof.lab.nova).

One Nova lab per machine: sessions take turns through a machine-wide lock file. The lab is
brought up once per session (about a minute once the packages are installed, more on a busy
machine) and taken down at the end if this session started it.
"""

from __future__ import annotations

import fcntl
import os
import shutil

import pytest

LAB_LOCK = "/tmp/vimprof-nova-lab.lock"


def nova_lab_unavailable() -> str | None:
    """Why the real Nova lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Nova lab needs root (network namespaces, libvirtd)"
    for tool in ("ip", "tcpdump", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/setup"
    from vimprof.lab import nova as lab

    missing = lab.packages_missing()
    if missing:
        return (f"OpenStack packages missing ({' '.join(missing)}): run "
                "scripts/setup-openstack")
    try:
        import openstack  # noqa: F401
    except ImportError:
        return "openstacksdk is missing: pip install -e '.[nova]'"
    return None


@pytest.fixture(scope="session")
def nova_lab_lock():
    with open(LAB_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def nova_lab(nova_lab_lock):
    """A running Nova lab (vimprof.lab.nova.LabState) with vimprof's compute driver."""
    reason = nova_lab_unavailable()
    if reason:
        pytest.skip(reason)
    from vimprof.lab import nova as lab

    was_up = lab.current() is not None
    state = lab.up()
    yield state
    if not was_up:
        lab.down()


@pytest.fixture
def conn(nova_lab):
    import openstack

    c = openstack.connect(**nova_lab.cloud(), compute_api_version="2.52")
    yield c
    c.close()
