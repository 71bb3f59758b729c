"""The test micro-VNF boots under QEMU and the accelerator choice is measured, then cached.

Needs qemu-system-x86_64 (skipped without it) and binutils (images/clickos/build.sh).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from vimprof.errors import VimprofError
from vimprof.lab import accel

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "images" / "clickos" / "build.sh"

# A boot to the ready line takes ~0.2 s under TCG here; allow for a loaded CI machine.
TCG_BOUND_MS = 10_000

pytestmark = pytest.mark.skipif(
    shutil.which(accel.QEMU) is None, reason=f"{accel.QEMU} not installed (qemu-system-x86)"
)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("testvnf")
    res = subprocess.run(
        ["sh", str(BUILD_SH), str(out)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip())
    assert path == out / "testvnf.elf"
    assert path.is_file()
    return path


def test_build_is_idempotent_multiboot_elf32(kernel: Path, tmp_path: Path) -> None:
    first = kernel.read_bytes()
    res = subprocess.run(
        ["sh", str(BUILD_SH), str(kernel.parent)], capture_output=True, text=True, check=True
    )
    assert Path(res.stdout.strip()) == kernel
    assert kernel.read_bytes() == first
    assert first[:5] == b"\x7fELF\x01"  # ELF32: QEMU's -kernel takes multiboot v1 ELF32 only
    head = first[:8192]  # the multiboot header must lie in the first 8 KiB
    magic = (0x1BADB002).to_bytes(4, "little")
    off = head.find(magic)
    assert off >= 0 and off % 4 == 0
    words = [int.from_bytes(head[off + 4 * i : off + 4 * i + 4], "little") for i in range(3)]
    assert sum(words) % 2**32 == 0


def test_boots_to_ready_line_under_tcg(kernel: Path) -> None:
    times = accel.measure_boot_ms(kernel, "tcg", runs=2, timeout_s=TCG_BOUND_MS / 1000)
    assert len(times) == 2
    assert all(0 < t < TCG_BOUND_MS for t in times)


def test_qemu_is_always_reaped(kernel: Path) -> None:
    before = accel.qemu_launches()
    accel.measure_boot_ms(kernel, "tcg", runs=1, timeout_s=TCG_BOUND_MS / 1000)
    assert accel.qemu_launches() == before + 1
    # The guest idles forever after its ready line, so only our kill ends QEMU.
    assert not _qemu_running_on(kernel)


def test_missing_ready_line_times_out_clearly(tmp_path: Path) -> None:
    # Zeroes are not a multiboot kernel: the firmware boots it as a raw image and hangs silently.
    bogus = tmp_path / "bogus.elf"
    bogus.write_bytes(b"\0" * 4096)
    t0 = time.monotonic()
    with pytest.raises(VimprofError, match="did not print its ready line within 2 s"):
        accel.measure_boot_ms(bogus, "tcg", runs=1, timeout_s=2)
    assert time.monotonic() - t0 < 10
    assert not _qemu_running_on(bogus)


def test_qemu_exiting_early_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty.elf"
    empty.write_bytes(b"")
    with pytest.raises(VimprofError, match="QEMU exited with status"):
        accel.measure_boot_ms(empty, "tcg", runs=1, timeout_s=10)
    assert not _qemu_running_on(empty)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        accel.measure_boot_ms(Path("x"), "xen")
    with pytest.raises(ValueError):
        accel.measure_boot_ms(Path("x"), "tcg", runs=0)
    with pytest.raises(VimprofError, match="build.sh"):
        accel.measure_boot_ms(Path("/nonexistent/testvnf.elf"), "tcg")


def test_kvm_usable_is_a_bool() -> None:
    assert isinstance(accel.kvm_usable(), bool)


def test_choose_accelerator_measures_then_uses_cache(kernel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "accel.json"
    before = accel.qemu_launches()
    first = accel.choose_accelerator(kernel, cache=cache, runs=1)
    launched = accel.qemu_launches() - before

    assert first.accel in ("tcg", "kvm")
    assert not first.from_cache
    assert 0 < first.tcg_ms < TCG_BOUND_MS
    assert first.reason
    if accel.kvm_usable() and first.kvm_ms is not None:
        assert launched == 2
        assert first.kvm_ms > 0
        assert first.accel == ("kvm" if first.kvm_ms < first.tcg_ms else "tcg")
    else:
        assert launched == 1
        assert first.accel == "tcg"

    data = json.loads(cache.read_text())
    assert len(data["entries"]) == 1

    t0 = time.monotonic()
    second = accel.choose_accelerator(kernel, cache=cache, runs=1)
    elapsed = time.monotonic() - t0
    assert accel.qemu_launches() - before == launched  # no QEMU started for the second call
    assert second.from_cache
    assert second == first
    assert elapsed < 1.0


def test_cache_is_keyed_by_kernel(kernel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    first = accel.choose_accelerator(kernel, cache=cache, runs=1)
    other = tmp_path / "other.elf"
    other.write_bytes(kernel.read_bytes() + b"\0")  # same kernel, different sha256
    before = accel.qemu_launches()
    again = accel.choose_accelerator(other, cache=cache, runs=1)
    assert accel.qemu_launches() > before
    assert not again.from_cache
    assert again.accel in ("tcg", "kvm")
    assert len(json.loads(cache.read_text())["entries"]) == 2
    assert statistics.median([first.tcg_ms, again.tcg_ms]) > 0


def test_corrupt_cache_is_ignored(kernel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    cache.write_text("{not json")
    choice = accel.choose_accelerator(kernel, cache=cache, runs=1)
    assert not choice.from_cache
    assert accel.choose_accelerator(kernel, cache=cache, runs=1).from_cache


def _qemu_running_on(kernel: Path) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(kernel).encode() in argv and any(a.endswith(b"qemu-system-x86_64") for a in argv):
            return True
    return False
