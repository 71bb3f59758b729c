"""Install vimprof's Nova driver where nova-compute (Debian's /usr/bin/python3) imports it.

Nova loads a compute driver only as ``nova.virt.<compute_driver>``
(nova/virt/driver.py load_compute_driver: importutils.import_object('nova.virt.%s' % ...)), so:

    <site>/vimprof_nova_driver/{__init__,hooks,diskless}.py   the kit, copied from this package
    <nova>/virt/vimprof_diskless.py                           shim: re-exports the driver class

and nova.conf (or Debian's /etc/nova/nova-compute.conf) says
``compute_driver = vimprof_diskless.DisklessLibvirtDriver``. <site> is the first
site-packages directory of /usr/bin/python3 under /usr/local (dist-packages on Debian).
Idempotent: files are rewritten only when their content differs. Run as root:

    python3 -m vimprof.drivers.nova.install [--uninstall] [--python /usr/bin/python3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from vimprof.errors import VimprofError

PACKAGE = "vimprof_nova_driver"
SHIM = "vimprof_diskless.py"
SHIM_TEXT = ('"""vimprof diskless libvirt driver: compute_driver = '
             'vimprof_diskless.DisklessLibvirtDriver (shim installed by vimprof)."""\n'
             f"from {PACKAGE}.diskless import DisklessLibvirtDriver  # noqa: F401\n")
SOURCES = ("hooks.py", "diskless.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def _where(python: str) -> tuple[Path, Path]:
    """(site directory for the package, nova/virt directory) of `python`."""
    code = ("import json, site, os, nova.virt; "
            "print(json.dumps([site.getsitepackages(), os.path.dirname(nova.virt.__file__)]))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise VimprofError(f"{python} cannot import nova ({proc.stderr.strip()[-200:]}): "
                           "run scripts/setup-openstack")
    sites, virt = json.loads(proc.stdout)
    local = [s for s in sites if s.startswith("/usr/local/")] or sites
    return Path(local[0]), Path(virt)


def _write(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def install(python: str = SYSTEM_PYTHON) -> list[Path]:
    """Install (or refresh) the kit and the shim; returns the files written (empty: up to
    date). Raises VimprofError when `python` cannot import nova, or the import check fails."""
    site, virt = _where(python)
    here = Path(__file__).parent
    written = []
    pkg = site / PACKAGE
    init = '"""vimprof\'s Nova driver kit (installed copy of vimprof/drivers/nova)."""\n'
    for path, text in [(pkg / "__init__.py", init),
                       *[(pkg / f, (here / f).read_text()) for f in SOURCES],
                       (virt / SHIM, SHIM_TEXT)]:
        if _write(path, text):
            written.append(path)
    check = subprocess.run(
        [python, "-c", "import nova.virt.vimprof_diskless as m; m.DisklessLibvirtDriver"],
        capture_output=True, text=True)
    if check.returncode != 0:
        raise VimprofError(f"the installed driver does not import under {python}: "
                           f"{check.stderr.strip()[-400:]}")
    return written


def uninstall(python: str = SYSTEM_PYTHON) -> list[Path]:
    """Remove the kit and the shim; returns what was removed."""
    site, virt = _where(python)
    removed = []
    if (virt / SHIM).exists():
        (virt / SHIM).unlink()
        removed.append(virt / SHIM)
    if (site / PACKAGE).exists():
        shutil.rmtree(site / PACKAGE)
        removed.append(site / PACKAGE)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uninstall", action="store_true")
    ap.add_argument("--python", default=SYSTEM_PYTHON)
    args = ap.parse_args(argv)
    try:
        done = uninstall(args.python) if args.uninstall else install(args.python)
    except VimprofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in done:
        print(("removed " if args.uninstall else "wrote ") + str(p))
    if not done:
        print("nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
