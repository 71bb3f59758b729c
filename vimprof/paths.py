"""Where vimprof keeps what the set-up builds (Nomad, the test micro-VNF) and lab state.

All under one cache root, `$VIMPROF_CACHE` or `~/.cache/vimprof`, so a second set-up takes seconds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vimprof.errors import VimprofError


def cache_root() -> Path:
    return Path(os.environ.get("VIMPROF_CACHE", Path.home() / ".cache" / "vimprof"))


def nomad_binary() -> Path:
    """The Nomad binary scripts/setup built: $VIMPROF_NOMAD, the cache, then PATH.

    Raises VimprofError when none is found.
    """
    env = os.environ.get("VIMPROF_NOMAD")
    candidates = [Path(env)] if env else []
    candidates.append(cache_root() / "bin" / "nomad")
    on_path = shutil.which("nomad")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise VimprofError("no Nomad binary found: run scripts/setup (it builds Nomad v1.6.3)")


def testvnf_kernel() -> Path:
    """The test micro-VNF kernel scripts/setup built (images/clickos/build.sh).

    Raises VimprofError when it is missing.
    """
    k = cache_root() / "images" / "testvnf.elf"
    if not k.is_file():
        raise VimprofError(f"no test micro-VNF kernel at {k}: run scripts/setup")
    return k


def driver_plugin() -> Path:
    """The micro-VNF task driver plugin (file name nomad-driver-xen, driver name "xen").

    Built by patches/nomad-xen/build.sh (called by scripts/setup) and linked at
    <cache>/bin/nomad-driver-xen; a Nomad agent loads it from a plugin_dir holding that file
    name. Raises VimprofError when it is missing.
    """
    p = cache_root() / "bin" / "nomad-driver-xen"
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise VimprofError(f"no Nomad driver plugin at {p}: run scripts/setup")
    return p


def nomad_reactive_binary() -> Path:
    """Nomad v1.6.3 with patches/nomad-xen/nomad-reactive.patch (allocation status sent at once).

    Built by patches/nomad-xen/build.sh (called by scripts/setup), linked at
    <cache>/bin/nomad-reactive. Raises VimprofError when it is missing.
    """
    p = cache_root() / "bin" / "nomad-reactive"
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise VimprofError(f"no reactive Nomad binary at {p}: run scripts/setup")
    return p


def lab_root() -> Path:
    """Root of lab state (configs, data dirs, logs, pid files): $VIMPROF_LAB_DIR or /tmp/vimprof.

    Short on purpose: Nomad puts unix sockets under its data dirs (108-byte path limit).
    """
    return Path(os.environ.get("VIMPROF_LAB_DIR", "/tmp/vimprof"))
