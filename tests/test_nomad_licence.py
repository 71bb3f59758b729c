"""Nomad's licence: github.com/hashicorp/nomad is MPL-2.0 up to the v1.6 line and BUSL-1.1 from
v1.7.0 on, which this project may not use (docs: /work/shared/design/nomad-internals.md, sec. 5).

(a) No go.mod or go.sum in the repository requires or lists the module github.com/hashicorp/nomad
    at v1.7.0 or later (pre-releases and pseudo-versions of v1.7.0 count as the v1.7 line).
    github.com/hashicorp/nomad/api is a separate MPL-2.0 module and allowed at any version.
(b) Each Nomad binary vimprof runs (vimprof.paths: the stock build and the reactive one) says
    `Nomad v1.6.3`; skipped when not built.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from vimprof import paths
from vimprof.errors import VimprofError

REPO = Path(__file__).resolve().parent.parent
NOMAD_MODULE = "github.com/hashicorp/nomad"
EXPECTED_VERSION = "v1.6.3"
FIRST_BUSL = "v1.7.0"

# Go module versions are semver with a leading "v" (https://go.dev/ref/mod#versions); a
# pseudo-version is a pre-release (vX.Y.Z-0.yyyymmddhhmmss-rev, vX.Y.Z-pre.0.yyyymmddhhmmss-rev
# or vX.0.0-yyyymmddhhmmss-rev); "+incompatible" is build metadata.
_SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


def parse_version(v: str) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    """(major, minor, patch) and the pre-release identifiers (empty for a release).

    Raises ValueError for anything that is not a Go module version.
    """
    m = _SEMVER.match(v)
    if not m:
        raise ValueError(f"not a Go module version: {v!r}")
    pre = tuple(m.group(4).split(".")) if m.group(4) else ()
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))), pre


def _cmp_pre(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """semver 2.0.0 section 11 precedence of two pre-release identifier lists."""
    if a == b:
        return 0
    if not a:  # a release ranks above its pre-releases
        return 1
    if not b:
        return -1
    for x, y in zip(a, b, strict=False):  # a common prefix: the longer ranks higher
        if x == y:
            continue
        xn, yn = x.isdigit(), y.isdigit()
        if xn and yn:
            return -1 if int(x) < int(y) else 1
        if xn != yn:  # numeric identifiers rank below alphanumeric ones
            return -1 if xn else 1
        return -1 if x < y else 1
    return -1 if len(a) < len(b) else 1


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Go module version a ranks below, equal to or above b (semver)."""
    (ca, pa), (cb, pb) = parse_version(a), parse_version(b)
    if ca != cb:
        return -1 if ca < cb else 1
    return _cmp_pre(pa, pb)


def is_busl(version: str) -> bool:
    """Whether github.com/hashicorp/nomad at `version` is in the BUSL-1.1 lines (v1.7.0 on).

    Pre-releases of v1.7.0 and later count, pseudo-versions included (v1.7.0-0.2023...-rev is a
    commit after the v1.6 line, on its way to v1.7.0): compared against v1.7.0's lowest possible
    pre-release, v1.7.0-0. A pseudo-version without a base tag (v0.0.0-yyyymmddhhmmss-rev) cannot
    be placed in a release line; it is refused too (pin a tag or a pseudo-version based on one).
    """
    core, pre = parse_version(version)
    if core == (0, 0, 0) and pre:
        return True
    return compare_versions(version, FIRST_BUSL + "-0") >= 0


def _strip_comment(line: str) -> str:
    i = line.find("//")
    return line[:i] if i >= 0 else line


def _unquote(tok: str) -> str:
    return tok[1:-1] if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "\"`" else tok


def gomod_nomad_versions(text: str) -> list[tuple[int, str, str]]:
    """(line number, directive, version) of every requirement of NOMAD_MODULE in a go.mod text:
    require entries and replace targets (`... => github.com/hashicorp/nomad vX`), in single-line
    and block form. A replace to a directory (`=> ./nomad`) has no version and is not listed."""
    found = []
    block = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if block is not None:
            if line == ")":
                block = None
                continue
            directive, rest = block, line
        else:
            head, _, rest = line.partition(" ")
            rest = rest.strip()
            if rest == "(":
                block = head
                continue
            directive = head
        toks = [_unquote(t) for t in rest.split()]
        if directive == "require" and len(toks) >= 2 and toks[0] == NOMAD_MODULE:
            found.append((n, "require", toks[1]))
        elif directive == "replace" and "=>" in toks:
            target = toks[toks.index("=>") + 1:]
            if len(target) >= 2 and target[0] == NOMAD_MODULE:
                found.append((n, "replace", target[1]))
    return found


def gosum_nomad_versions(text: str) -> list[tuple[int, str, str]]:
    """(line number, "go.sum", version) of every go.sum line of NOMAD_MODULE (`/go.mod` lines
    included)."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        toks = line.split()
        if len(toks) >= 2 and toks[0] == NOMAD_MODULE:
            found.append((n, "go.sum", toks[1].removesuffix("/go.mod")))
    return found


def _go_files() -> list[Path]:
    out = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs
                   if not d.startswith(".") and d not in ("node_modules", "__pycache__")]
        out += [Path(root) / f for f in files if f in ("go.mod", "go.sum")]
    return sorted(out)


# --- (a) the version parser and the scanners --------------------------------------------------


@pytest.mark.parametrize("version, busl", [
    ("v1.11.3", True),  # numerically above v1.7.0 (as a string "v1.11.3" < "v1.7.0")
    ("v1.7.0", True),
    ("v1.7.0-beta.1", True),
    ("v1.7.0-rc.1", True),
    ("v1.7.0-0.20230811145000-1d5a2e2b8c7a", True),  # pseudo-version on the way to v1.7.0
    ("v1.10.0-0.20250101000000-abcdefabcdef", True),
    ("v2.0.0+incompatible", True),
    ("v0.0.0-20231030125810-e0497bff1437", True),  # no base tag: cannot be placed, refused
    ("v1.6.3", False),
    ("v1.6.4-0.20231101000000-abcdefabcdef", False),  # a commit after v1.6.3
    ("v1.6.3-0.20231030125810-e0497bff1437", False),
    ("v1.6.0-beta.1", False),
    ("v1.5.6", False),
    ("v0.12.10", False),
])
def test_is_busl(version, busl):
    assert is_busl(version) is busl


def test_compare_versions_semver_order():
    order = ["v0.0.0-20200101000000-aaaaaaaaaaaa", "v1.6.0-beta.1", "v1.6.0", "v1.6.3",
             "v1.6.4-0.20231101000000-abcdefabcdef", "v1.6.4",
             "v1.7.0-0.20230811145000-abcdefabcdef", "v1.7.0-beta.1", "v1.7.0-rc.1", "v1.7.0",
             "v1.10.0", "v1.11.3"]
    for i, a in enumerate(order):
        for j, b in enumerate(order):
            assert compare_versions(a, b) == (i > j) - (i < j), (a, b)


@pytest.mark.parametrize("bad", ["1.6.3", "v1.6", "v01.6.3", "latest", "v1.6.3-", ""])
def test_parse_version_rejects(bad):
    with pytest.raises(ValueError):
        parse_version(bad)


def test_scanners_find_a_busl_nomad_and_ignore_the_api_module():
    gomod = """module example.local/x

go 1.25.8

require github.com/hashicorp/nomad v1.11.3 // indirect

require (
	github.com/hashicorp/nomad/api v1.11.3
	"github.com/hashicorp/nomad" v1.7.0
	github.com/hashicorp/nomad-autoscaler v0.4.0
)

replace github.com/hashicorp/nomad => ./nomad

replace (
	github.com/hashicorp/nomad => github.com/hashicorp/nomad v1.7.0-0.20230811145000-1d5a2e2b8c7a
)
"""
    got = gomod_nomad_versions(gomod)
    assert got == [(5, "require", "v1.11.3"), (9, "require", "v1.7.0"),
                   (16, "replace", "v1.7.0-0.20230811145000-1d5a2e2b8c7a")]
    assert all(is_busl(v) for _, _, v in got)
    gosum = ("github.com/hashicorp/nomad v1.11.3 h1:AAAA=\n"
             "github.com/hashicorp/nomad v1.11.3/go.mod h1:BBBB=\n"
             "github.com/hashicorp/nomad/api v0.0.0-20260324203407-b27b0c2e019a h1:CCCC=\n")
    assert gosum_nomad_versions(gosum) == [(1, "go.sum", "v1.11.3"), (2, "go.sum", "v1.11.3")]


# --- (a) the repository -----------------------------------------------------------------------


def test_repository_has_go_modules():
    """The scan below must see the Go modules it is meant to guard."""
    rel = {str(p.relative_to(REPO)) for p in _go_files()}
    assert {"nomad-build/go.mod", "nomad-build/go.sum", "patches/nomad-xen/driver/go.mod",
            "patches/nomad-xen/reactive/go.mod"} <= rel


def test_no_busl_nomad_in_go_mod_or_go_sum():
    offending = []
    for p in _go_files():
        text = p.read_text()
        found = gomod_nomad_versions(text) if p.name == "go.mod" else gosum_nomad_versions(text)
        offending += [f"{p.relative_to(REPO)}:{n}: {what} {NOMAD_MODULE} {v}"
                      for n, what, v in found if is_busl(v)]
    assert not offending, (
        f"{NOMAD_MODULE} at {FIRST_BUSL} or later is BUSL-1.1, not allowed "
        f"(use {EXPECTED_VERSION}):\n"
        + "\n".join(offending))


def test_nomad_builds_pin_the_expected_version():
    """The wrapper modules that build Nomad require exactly EXPECTED_VERSION."""
    for rel in ("nomad-build/go.mod", "patches/nomad-xen/reactive/go.mod",
                "patches/nomad-xen/driver/go.mod"):
        reqs = [v for _, what, v in gomod_nomad_versions((REPO / rel).read_text())
                if what == "require"]
        assert reqs == [EXPECTED_VERSION], (rel, reqs)


# --- (b) the built binaries -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["nomad_binary", "nomad_reactive_binary"])
def test_built_nomad_reports_expected_version(which):
    try:
        binary = getattr(paths, which)()
    except VimprofError as e:
        pytest.skip(f"{which}: not built ({e})")
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0].strip() if out.stdout else ""
    assert first == f"Nomad {EXPECTED_VERSION}", f"{binary} ({which}): {out.stdout!r}"
