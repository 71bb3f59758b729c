"""The run directory's schema: JSON Schema files, its version, and `vimprof validate`.

Each file of a run directory (vimprof/rundir.py) has a JSON Schema (draft 2020-12) shipped in
vimprof/schemas/: manifest.json -> manifest.schema.json; one record of requests.jsonl,
hooks.jsonl, vim-events.jsonl and timelines.jsonl -> requests / hooks / vim-events /
timelines.schema.json. A report's summary.json has summary.schema.json.

Versioning (docs/run-directory.md): the manifest's "schema" ("vimprof-run/1") versions the
whole directory; JSON-lines records carry no version of their own. A manifest without
"schema" is version 0: the shapes vimprof wrote before the field existed, which are the same
as version 1, so it is read and validated with the same schema files. A newer version than
this vimprof knows is refused (`validate`, `vimprof.load`) with a message naming both.

`validate_run(path)` returns a RunReport: errors and warnings as `FILE:LINE: message (at
json/pointer)` lines, record counts and the version. A torn last line of a JSON-lines file
(a campaign killed mid-write) is a warning, as the readers skip it; a missing optional file
is fine; a missing manifest.json is an error. `assert_valid(run_dir)` is the same for tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from vimprof import rundir
from vimprof.errors import VimprofError

PREFIX = "vimprof-run/"
CURRENT = rundir.SCHEMA_VERSION  # "vimprof-run/1", what campaigns write
READABLE = (0, 1)  # versions this vimprof reads; 0: a manifest without "schema"
_VERSION = re.compile(r"^vimprof-run/([0-9]+)$")

# run-directory file -> schema file; JSON-lines files are validated record by record
JSONL_FILES = {
    rundir.REQUESTS: "requests.schema.json",
    rundir.HOOKS: "hooks.schema.json",
    rundir.VIM_EVENTS: "vim-events.schema.json",
    rundir.TIMELINES: "timelines.schema.json",
}
MANIFEST_SCHEMA = "manifest.schema.json"
SUMMARY_SCHEMA = "summary.schema.json"
SUMMARY = "summary.json"
# the summary line's nouns, in file order
_NOUNS = {rundir.REQUESTS: "requests", rundir.HOOKS: "hooks", rundir.VIM_EVENTS: "vim-events",
          rundir.TIMELINES: "timelines"}
_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
               b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"}  # pcap (us, ns; both orders), pcapng


class SchemaVersionError(VimprofError):
    """A run directory whose manifest declares a schema version this vimprof cannot read."""


def version_name(n: int) -> str:
    return f"{PREFIX}{n}"


def readable_text() -> str:
    return ", ".join(f"{version_name(n)}" + (" (no \"schema\" in the manifest)" if n == 0
                                              else "") for n in READABLE)


def manifest_version(manifest: dict[str, Any], where: str = "manifest.json") -> int:
    """The schema version a manifest declares: 0 without "schema", N for "vimprof-run/N".

    Raises SchemaVersionError for a malformed value or a version newer than READABLE.
    """
    if "schema" not in manifest:
        return 0
    value = manifest["schema"]
    m = _VERSION.match(value) if isinstance(value, str) else None
    if m is None:
        raise SchemaVersionError(f"{where}: \"schema\" is {value!r}, not a vimprof run "
                                 f"directory version ({PREFIX}N)")
    n = int(m.group(1))
    if n not in READABLE:
        raise SchemaVersionError(
            f"{where}: schema {value} is not one this vimprof ({_vimprof_version()}) reads: "
            f"it reads {readable_text()}; upgrade vimprof to read this run directory")
    return n


def _vimprof_version() -> str:
    from vimprof.version import __version__

    return __version__


def check_readable(run: rundir.RunDir) -> int:
    """The schema version of `run`; SchemaVersionError when this vimprof cannot read it,
    VimprofError when manifest.json is not JSON."""
    path = run.file(rundir.MANIFEST)
    try:
        manifest = run.manifest()
    except ValueError as exc:
        raise VimprofError(f"{path} is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise VimprofError(f"{path} is not a JSON object")
    return manifest_version(manifest, str(path))


@cache
def schema(name: str) -> dict[str, Any]:
    """A schema file of vimprof/schemas/ as a dict (package data)."""
    text = resources.files("vimprof").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator(name: str):
    import jsonschema

    cls = jsonschema.Draft202012Validator
    s = schema(name)
    cls.check_schema(s)
    return cls(s)


@dataclass
class Problem:
    """One finding: `file` (as given), `line` (1-based; None: the whole file), message, the
    JSON pointer inside the record or document, and whether it is only a warning."""

    file: str
    line: int | None
    message: str
    pointer: str | None = ""  # None: not about a place inside a record
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        kind = "warning: " if self.warning else ""
        at = f" (at {self.pointer or '/'})" if self.pointer is not None and self.line else ""
        return f"{where}: {kind}{self.message}{at}"


@dataclass
class RunReport:
    """What `validate_run` found in one run directory."""

    path: Path
    version: int | None = None  # None: unknown (no manifest, or refused)
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # file name -> records
    manifest: bool = False  # manifest.json exists
    refused: str | None = None  # the manifest's "schema" when this vimprof cannot read it
    capture: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One line: "runs/x: valid (vimprof-run/1): manifest, 20 requests, ..."."""
        parts = ["manifest"] if self.manifest else []
        parts += [f"{self.counts[f]} {_NOUNS[f]}" for f in _NOUNS if f in self.counts]
        if self.capture:
            parts.append("capture")
        if self.version == 0:
            ver = f"{version_name(0)}: no \"schema\" in the manifest, the shapes of {CURRENT}"
        elif self.refused:
            ver = f"{self.refused}: not a version this vimprof reads"
        else:
            ver = version_name(self.version) if self.version is not None else "version unknown"
        state = "valid" if self.ok else f"{len(self.errors)} error(s)"
        warn = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return f"{self.path}: {state} ({ver}): {', '.join(parts) or 'no files'}{warn}"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(err) -> str:
    """A one-line message for a jsonschema ValidationError (never the whole record)."""
    v = err.validator
    if v == "type":
        want = err.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{_short(err.instance)} is not of type {want}"
    if v == "enum":
        return f"{_short(err.instance)} is not one of {', '.join(map(_short, err.validator_value))}"
    if v == "const":
        return f"{_short(err.instance)} is not {_short(err.validator_value)}"
    if v in ("minimum", "maximum", "minLength", "pattern", "minItems", "maxItems"):
        return f"{_short(err.instance)} fails {v} {_short(err.validator_value)}"
    if v == "required":
        m = re.match(r"^'(.*)' is a required property$", err.message)
        return f"missing required field {json.dumps(m.group(1))}" if m else err.message
    msg = err.message
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _pointer(path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _errors(name: str, doc: Any) -> list[tuple[str, str]]:
    """(message, JSON pointer) of each schema violation of `doc`, in document order."""
    out = []
    for err in sorted(_validator(name).iter_errors(doc), key=lambda e: list(map(str, e.path))):
        out.append((_message(err), _pointer(err.absolute_path)))
    return out


# -- line numbers inside an indented JSON document (manifest.json, summary.json) ------------

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


def json_lines(text: str) -> dict[str, int]:
    """JSON pointer -> 1-based line where its value starts, for a valid JSON document."""
    out: dict[str, int] = {}
    decoder = json.JSONDecoder()

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def value(i: int, ptr: str) -> int:
        i = _WS.match(text, i).end()
        out[ptr] = line_of(i)
        c = text[i]
        if c == "{":
            i = _WS.match(text, i + 1).end()
            if text[i] == "}":
                return i + 1
            while True:
                key, i = json.decoder.scanstring(text, _WS.match(text, i).end() + 1)
                i = _WS.match(text, i).end() + 1  # the colon
                esc = key.replace("~", "~0").replace("/", "~1")
                i = _WS.match(text, value(i, f"{ptr}/{esc}")).end()
                if text[i] == "}":
                    return i + 1
                i += 1  # the comma
        if c == "[":
            i = _WS.match(text, i + 1).end()
            if text[i] == "]":
                return i + 1
            n = 0
            while True:
                i = _WS.match(text, value(i, f"{ptr}/{n}")).end()
                n += 1
                if text[i] == "]":
                    return i + 1
                i += 1
        if c == '"':
            return json.decoder.scanstring(text, i + 1)[1]
        m = _SCALAR.match(text, i)
        if m is None:  # NaN, Infinity: what json.loads accepts beyond JSON
            return decoder.raw_decode(text, i)[1]
        return m.end()

    value(0, "")
    return out


def _line_for(lines: dict[str, int], ptr: str) -> int:
    while ptr not in lines and ptr:
        ptr = ptr.rsplit("/", 1)[0]
    return lines.get(ptr, 1)


def validate_document(path: Path, schema_name: str, shown: str | None = None
                      ) -> tuple[Any, list[Problem]]:
    """Validate one JSON document file; (the document or None, problems)."""
    shown = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(shown, None, f"cannot read: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, [Problem(shown, None, "not UTF-8 text")]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(shown, exc.lineno, f"not JSON: {exc.msg}", None)]
    lines = json_lines(text)
    problems = [Problem(shown, _line_for(lines, ptr), msg, ptr)
                for msg, ptr in _errors(schema_name, doc)]
    return doc, sorted(problems, key=lambda p: p.line or 0)


def validate_jsonl(path: Path, schema_name: str, shown: str | None = None,
                   vim: str | None = None) -> tuple[int, list[Problem]]:
    """Validate a JSON-lines file record by record; (records read, problems).

    A last line that is not JSON and has no newline is a torn write: a warning. `vim`: the
    manifest's VIM, which records naming one must match.
    """
    shown = shown or str(path)
    problems: list[Problem] = []
    n = 0
    try:
        data = path.read_bytes()
    except OSError as exc:
        return 0, [Problem(shown, None, f"cannot read: {exc.strerror}")]
    raw_lines = data.split(b"\n")
    torn_at = len(raw_lines) if raw_lines[-1] else None  # no newline after the last line
    for lineno, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            if lineno == torn_at:
                problems.append(Problem(shown, lineno, "torn last line (a campaign killed "
                                        "mid-write?): readers skip it", None, warning=True))
            else:
                why = (f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError)
                       else "not UTF-8")
                problems.append(Problem(shown, lineno, f"not JSON: {why}", None))
            continue
        n += 1
        for msg, ptr in _errors(schema_name, rec):
            problems.append(Problem(shown, lineno, msg, ptr))
        if vim and isinstance(rec, dict) and rec.get("vim") in ("nomad", "nova") \
                and rec["vim"] != vim:
            problems.append(Problem(shown, lineno, f"record of vim {rec['vim']!r} in a "
                                    f"{vim} run (manifest vim.name)", "/vim"))
    return n, problems


def validate_run(path: Path | str, shown: str | None = None) -> RunReport:
    """Validate run directory `path`: manifest.json, then each JSON-lines file present."""
    path = Path(path)
    shown_dir = shown or str(path)
    report = RunReport(Path(shown_dir))

    def name(f: str) -> str:
        return f"{shown_dir.rstrip('/')}/{f}"

    mpath = path / rundir.MANIFEST
    vim = None
    if not mpath.is_file():
        report.problems.append(Problem(name(rundir.MANIFEST), None,
                                       "missing: every run directory has a manifest"))
    else:
        report.manifest = True
        manifest, problems = validate_document(mpath, MANIFEST_SCHEMA, name(rundir.MANIFEST))
        if isinstance(manifest, dict):
            try:
                report.version = manifest_version(manifest, name(rundir.MANIFEST))
            except SchemaVersionError as exc:
                # another layout: neither the manifest nor the records are ours to judge
                line = _line_for(json_lines(mpath.read_text(encoding="utf-8")), "/schema")
                msg = str(exc).removeprefix(name(rundir.MANIFEST) + ": ")
                report.problems.append(Problem(name(rundir.MANIFEST), line, msg, "/schema"))
                report.refused = str(manifest["schema"])
                return report
            v = manifest.get("vim") if isinstance(manifest.get("vim"), dict) else {}
            vim = v.get("name") if v.get("name") in ("nomad", "nova") else None
        report.problems += problems
    for f, schema_name in JSONL_FILES.items():
        p = path / f
        if p.is_file():
            report.counts[f], problems = validate_jsonl(p, schema_name, name(f), vim)
            report.problems += problems
    cap = path / rundir.CAPTURE
    if cap.is_file():
        report.capture = True
        with open(cap, "rb") as fh:
            magic = fh.read(4)
        if not magic:
            report.problems.append(Problem(name(rundir.CAPTURE), None, "empty (the capture "
                                           "never started?)", warning=True))
        elif magic not in _PCAP_MAGIC:
            report.problems.append(Problem(name(rundir.CAPTURE), None,
                                           "not a pcap or pcapng file"))
    return report


def validate_summary(path: Path | str) -> list[Problem]:
    """Validate a report's summary.json."""
    return validate_document(Path(path), SUMMARY_SCHEMA)[1]


def assert_valid(run_dir: Path | str | rundir.RunDir) -> RunReport:
    """For tests: raise AssertionError listing every error if `run_dir` is not valid."""
    path = run_dir.path if isinstance(run_dir, rundir.RunDir) else Path(run_dir)
    report = validate_run(path)
    assert report.ok, "\n".join([report.summary(), *map(str, report.errors)])
    return report


def validate_refs(refs: list[str] | tuple[str, ...], runs_dir: Path = rundir.DEFAULT_RUNS_ROOT
                  ) -> tuple[list[str], bool]:
    """`vimprof validate`: output lines (problems, then one summary line per run) and whether
    everything is valid. A ref is a run directory, a label under `runs_dir`, or a report's
    summary.json. Raises VimprofError when a ref is neither (before validating anything)."""
    targets: list[tuple[str, Path]] = []
    for ref in refs:
        p = Path(ref)
        if p.is_file() and p.suffix == ".json":
            targets.append(("summary", p))
        else:
            targets.append(("run", rundir.RunDir.resolve(ref, runs_dir).path))
    lines: list[str] = []
    ok = True
    for kind, p in targets:
        if kind == "summary":
            problems = validate_summary(p)
            bad = [x for x in problems if not x.warning]
            lines += map(str, problems)
            lines.append(f"{p}: " + (f"{len(bad)} error(s) (report summary)" if bad
                                     else "valid (report summary)"))
            ok &= not bad
            continue
        report = validate_run(p)
        lines += map(str, report.problems)
        lines.append(report.summary())
        ok &= report.ok
    return lines, ok
