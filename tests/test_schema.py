"""The run directory's schema (vimprof/schema.py, vimprof/schemas/, docs/run-directory.md):
every committed run directory and what each writer produces validate; bad records are one
FILE:LINE line each; versions; `vimprof validate`; `vimprof.load`."""

from __future__ import annotations

import io
import json
import shutil
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from rich.console import Console

import vimprof
from vimprof import rundir, schema
from vimprof.cli import cli
from vimprof.rundir import RunDir

DATA = Path(__file__).parent / "data"
ALL_RUN_DIRS = sorted(p.parent for p in DATA.rglob(rundir.MANIFEST))
# committed before "schema" existed (version 0) / with it (tests/data/load-nomad: vimprof-run/1)
RUN_DIRS = [p for p in ALL_RUN_DIRS if '"schema"' not in (p / rundir.MANIFEST).read_text()]
RUN_DIRS_V1 = [p for p in ALL_RUN_DIRS if p not in RUN_DIRS]
STOCK_TUNED = DATA / "report-nomad-stock-tuned"
SCHEMA_FILES = ("manifest", "requests", "hooks", "vim-events", "timelines", "summary")


def _copy(src: Path, tmp_path: Path, name: str = "r") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def _validate(*args: str):
    return CliRunner().invoke(cli, ["validate", *args])


# -- the schema files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_files_are_package_data_and_draft_2020_12(name):
    f = resources.files("vimprof").joinpath("schemas", f"{name}.schema.json")
    doc = json.loads(f.read_text(encoding="utf-8"))
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


# -- what vimprof wrote and writes validates -----------------------------------------------


def test_every_committed_run_directory_is_found():
    names = {str(p.relative_to(DATA)) for p in RUN_DIRS}
    assert {"nomad-lab-3runs", "nomad163-lab-3runs", "report-nomad-stock-tuned/stock",
            "report-nomad-stock-tuned/tuned", "report-nomad-stock-tuned/reactive"} <= names


@pytest.mark.parametrize("run", RUN_DIRS, ids=lambda p: str(p.relative_to(DATA)))
def test_committed_run_directories_are_valid_version_0(run):
    report = schema.assert_valid(run)
    assert report.version == 0  # committed before "schema" existed: the same shapes
    assert report.warnings == []
    assert 'vimprof-run/0: no "schema" in the manifest' in report.summary()


@pytest.mark.parametrize("run", RUN_DIRS_V1, ids=lambda p: str(p.relative_to(DATA)))
def test_committed_run_directories_are_valid_version_1(run):
    report = schema.assert_valid(run)
    assert report.version == 1
    assert report.warnings == []


def test_cli_validates_all_committed_runs():
    res = _validate(*map(str, RUN_DIRS))
    assert res.exit_code == 0, res.output
    out = res.output.splitlines()
    assert len(out) == len(RUN_DIRS) and all(": valid (vimprof-run/0" in x for x in out)
    stock = next(x for x in out if x.startswith(str(STOCK_TUNED / "stock")))
    assert stock.endswith("manifest, 16 requests, 64 hooks, 16 timelines")


def test_timelines_analyzed_from_committed_captures_are_valid(tmp_path):
    """The wire timelines of both VIMs (Nomad with cross-checks against vim-events, Nova from
    the committed OpenStack captures) as `vimprof analyze` writes them."""
    from vimprof.analyzer import analyze_run
    from vimprof.analyzer.pipeline import analyze
    from vimprof.analyzer.sink import write_timelines

    for name in ("nomad-lab-3runs", "nomad163-lab-3runs"):
        run = RunDir(_copy(DATA / name, tmp_path, name))
        analyze_run(run, [])
        report = schema.assert_valid(run)
        assert report.counts[rundir.TIMELINES] == 3
        assert all("crosscheck" in t for t in run.read(rundir.TIMELINES))
    for name in ("nova-lab-boot", "nova-lab-delete", "nova-lab-keystone"):
        tls, _, _ = analyze(DATA / name / "capture.pcap")
        run = RunDir.create(name, tmp_path)
        run.update_manifest(schema=rundir.SCHEMA_VERSION, vimprof_version="0.1.0", label=name,
                            campaign={"id": None, "runs": 1, "mode": "sequential"},
                            vim={"name": "nova"}, start_ns=None)
        write_timelines(run.file(rundir.TIMELINES), tls)
        assert schema.assert_valid(run).counts[rundir.TIMELINES] == len(tls) >= 1


def test_report_summary_is_valid(tmp_path):
    from vimprof.report import write_report

    runs = [RunDir(STOCK_TUNED / x) for x in ("stock", "tuned", "reactive")]
    write_report(runs, tmp_path, Console(file=io.StringIO()), n_resamples=200)
    summary = tmp_path / "summary.json"
    assert schema.validate_summary(summary) == []
    res = _validate(str(summary))
    assert res.exit_code == 0 and res.output == f"{summary}: valid (report summary)\n"
    doc = json.loads(summary.read_text())
    doc["stats"][0]["n"] = "16"
    del doc["baseline"]
    summary.write_text(json.dumps(doc, indent=2) + "\n")
    res = _validate(str(summary))
    assert res.exit_code == 1
    assert f'{summary}:1: missing required field "baseline" (at /)' in res.output
    assert '"16" is not of type integer (at /stats/0/n)' in res.output


def test_engine_start_writes_the_schema_version(tmp_path):
    from vimprof.campaigns import engine

    run = RunDir.create("x", tmp_path)
    engine.start(run, label="x", campaign={"id": "abc", "runs": 1, "mode": "sequential"},
                 vim={"name": "nomad", "version": "1.6.3"})
    manifest = run.manifest()
    assert manifest["schema"] == "vimprof-run/1" == rundir.SCHEMA_VERSION
    assert schema.assert_valid(run).version == 1


def test_rally_import_writes_the_schema_version_and_validates(tmp_path):
    from vimprof.rally import importer

    for name in ("rally-lab", "rally-fault"):
        run = importer.import_report(DATA / name / "report.json", name, tmp_path)
        assert run.manifest()["schema"] == "vimprof-run/1"
        report = schema.assert_valid(run)
        assert report.version == 1 and report.counts[rundir.REQUESTS] >= 1
        assert report.summary().startswith(f"{run.path}: valid (vimprof-run/1): manifest, ")


def _schema_errors(name: str, record: dict) -> list[str]:
    return [m for m, _ in schema._errors(f"{name}.schema.json", record)]


def test_nomad_request_records_validate():
    from vimprof.pushers.nomad import RunRecord

    failed = RunRecord(run=0, job_id="vimprof-x-abc-0000", error="no allocation").as_json()
    assert _schema_errors("requests", failed) == []
    ok = RunRecord(run=1, job_id="vimprof-x-abc-0001", ok=True, alloc_id="a", node_id="n",
                   eval_id="e", t_submit_ns=1, t_registered_ns=2, t_running_ns=3,
                   t_stop_ns=4, t_gone_ns=5, client_status="complete").as_json()
    assert _schema_errors("requests", ok) == []


def test_nova_request_records_validate():
    from vimprof.pushers.nova import NovaRunRecord

    rec = NovaRunRecord(run=0, name="n", ok=True, server_id="s", t_submit_ns=1,
                        t_accepted_ns=2, t_active_ns=3, t_delete_ns=4, t_gone_ns=5,
                        states=[{"t_ns": 3, "status": "ACTIVE", "task_state": None}]).as_json()
    rec["variant"], rec["warmup"] = "stock", True  # what the Nova campaign adds
    assert _schema_errors("requests", rec) == []
    failed = NovaRunRecord(run=1, name="n", error="server went to ERROR").as_json()
    assert _schema_errors("requests", failed) == []


def test_hook_records_of_every_writer_validate(tmp_path, monkeypatch):
    from vimprof.drivers import hooks, xl_floor
    from vimprof.drivers.nova import hooks as nova_hooks
    from vimprof.drivers.xenstore import DomainWatcher

    # the Go plugin's line (patches/nomad-xen/driver/xen/hooks.go appendHookLine)
    plugin = {"t_ns": 1, "end_ns": 2, "hook": "spawn", "alloc_id": "a", "task": "micro-vnf",
              "driver": "xen", "variant": "tuned", "backend": "xl", "node": "dom0"}
    # the Nova driver's line, as the campaign collects it (alias "instance")
    f = tmp_path / "nova-hooks.jsonl"
    nova_hooks.record("wait_boot", "uuid-1", "stock", 1, 2, path=str(f), error="Timeout")
    tail = hooks.HooksTail(f, from_end=False, key="instance_uuid", alias="instance")
    (nova,) = tail.take("uuid-1")
    monkeypatch.setattr(hooks.accel, "qemu_binary", lambda: "qemu")
    monkeypatch.setattr(hooks.accel, "boot_once", lambda *a, **k: (10, 20))
    floor = hooks.floor_probe(Path("/k"), "tcg", 128, 3)
    monkeypatch.setattr(xl_floor, "_timed", lambda cmd, state, t: (10, 20, ""))
    monkeypatch.setattr(xl_floor, "_domid", lambda name, state: None)
    xl = xl_floor.xl_floor_probe(runs=1, state=object(), first_run=2)
    watcher = DomainWatcher("/nonexistent")
    watcher._emit("domain_created", 7, None, 1, 2)
    watcher._emit("domain_released", 7, "nomad-micro-vnf-12345678", 3, 4)
    for rec in [plugin, nova, floor, *xl, *watcher.records]:
        assert _schema_errors("hooks", rec) == [], rec


def test_vim_event_records_of_every_writer_validate():
    from vimprof.pushers.nomad import _task_events
    from vimprof.pushers.nomad_events import EventStream
    from vimprof.pushers.nova import NovaPusher

    alloc = {"ID": "a", "TaskStates": {"micro-vnf": {"Events": [
        {"Time": 5, "Type": "Started", "DisplayMessage": "Task started by client"}]}}}
    stream = EventStream(None, "vimprof-")
    stream._frame({"Index": 9, "Events": [{"Topic": "Allocation", "Index": 9, "Payload": {
        "Allocation": {"ID": "a", "JobID": "vimprof-x-1", "CreateTime": 1, "ModifyTime": 2,
                       "ClientStatus": "running"}}}]}, 3)

    class Resp:
        def __init__(self, status, doc):
            self.status_code, self.doc = status, doc

        def json(self):
            return self.doc

    class Compute:
        def get(self, path, **_):
            if path.endswith("os-instance-actions"):
                return Resp(200, {"instanceActions": [{"request_id": "req-1"}]})
            return Resp(200, {"instanceAction": {
                "action": "create", "start_time": "2026-11-21T14:02:03.000000",
                "message": None, "events": [
                    {"event": "compute__do_build_and_run_instance", "result": "Success",
                     "start_time": "2026-11-21T14:02:03.000000", "finish_time": None,
                     "host": "hostn"}]}})

    class Conn:
        compute = Compute()

    actions = NovaPusher(Conn()).instance_actions("s")
    nova = [{**ev, "vim": "nova", "server_id": "s"} for ev in actions]  # the campaign's keys
    records = [*_task_events(alloc), *stream.take(), *nova]
    assert len(records) == 5
    for rec in records:
        assert _schema_errors("vim-events", rec) == [], rec


def test_timelines_without_the_wire_validate():
    from vimprof.analyzer.builders.nomad_events import timelines_from_events

    req = {"vim": "nomad", "alloc_id": "a", "job_id": "j", "run": 0, "t_submit_ns": 1,
           "t_registered_ns": 2, "t_stop_ns": 9}
    events = [{"t_ns": t, "name": n, "subject": "a", "source": "vim", "via": "event-stream",
               "index": None} for t, n in ((3, "Received"), (4, "Started"),
                                           (5, "Allocation running"), (10, "Allocation complete"))]
    (tl,) = timelines_from_events([req], events, set(), "the capture is TLS-encrypted")
    assert tl["phases"]["total"]["source"] == "client+vim"
    assert _schema_errors("timelines", tl) == []


# -- bad records: one FILE:LINE line each --------------------------------------------------


def test_bad_records_are_file_line_errors(tmp_path):
    run = _copy(STOCK_TUNED / "stock", tmp_path)
    reqs = _lines(run / rundir.REQUESTS)
    reqs[1]["t_submit_ns"] = "soon"  # wrong type
    del reqs[2]["alloc_id"]  # missing required field
    reqs[3]["vim"] = "kubernetes"  # unknown vim
    _write_lines(run / rundir.REQUESTS, reqs)
    tls = _lines(run / rundir.TIMELINES)
    tls[4]["phases"]["total"]["ms"] = "12.5"
    tls[5]["vim"] = "nova"  # a Nova timeline in a Nomad run
    _write_lines(run / rundir.TIMELINES, tls)
    hooks = _lines(run / rundir.HOOKS)
    del hooks[0]["t_ns"]
    _write_lines(run / rundir.HOOKS, hooks)
    (run / rundir.VIM_EVENTS).write_text('{"source": "vim", "subject": "a", "name": "Started",'
                                         ' "t_ns": 1.5}\nnot json\n')
    res = _validate(str(run))
    assert res.exit_code == 1
    out = res.output.splitlines()
    r = str(run)
    assert out[:-1] == [
        f'{r}/requests.jsonl:2: "soon" is not of type integer or null (at /t_submit_ns)',
        f'{r}/requests.jsonl:3: missing required field "alloc_id" (at /)',
        f'{r}/requests.jsonl:4: "kubernetes" is not one of "nomad", "nova" (at /vim)',
        f'{r}/hooks.jsonl:1: missing required field "t_ns" (at /)',
        f'{r}/vim-events.jsonl:1: 1.5 is not of type integer (at /t_ns)',
        f'{r}/vim-events.jsonl:2: not JSON: Expecting value at column 1',
        f'{r}/timelines.jsonl:5: "12.5" is not of type number (at /phases/total/ms)',
        f"{r}/timelines.jsonl:6: record of vim 'nova' in a nomad run (manifest vim.name) "
        "(at /vim)",
    ]
    assert out[-1].startswith(f"{r}: 8 error(s) (vimprof-run/0")


def test_bad_manifest_errors_carry_its_line(tmp_path):
    run = _copy(STOCK_TUNED / "stock", tmp_path)
    m = json.loads((run / rundir.MANIFEST).read_text())
    m["campaign"]["runs"] = "16"
    m["vim"]["name"] = "k8s"
    del m["label"]
    text = json.dumps(m, indent=2, sort_keys=True) + "\n"
    (run / rundir.MANIFEST).write_text(text)
    lines = text.splitlines()
    runs_line = lines.index('    "runs": "16",') + 1
    name_line = lines.index('    "name": "k8s",') + 1
    res = _validate(str(run))
    assert res.exit_code == 1
    assert res.output.splitlines()[:3] == [
        f'{run}/manifest.json:1: missing required field "label" (at /)',
        f'{run}/manifest.json:{runs_line}: "16" is not of type integer (at /campaign/runs)',
        f'{run}/manifest.json:{name_line}: "k8s" is not one of "nomad", "nova" (at /vim/name)',
    ]


def test_manifest_not_json_and_missing_manifest(tmp_path):
    run = _copy(STOCK_TUNED / "stock", tmp_path)
    (run / rundir.MANIFEST).write_text('{\n  "label": "x",\n  oops\n}\n')
    res = _validate(str(run))
    assert res.exit_code == 1
    assert res.output.startswith(f"{run}/manifest.json:3: not JSON: Expecting property name")
    (run / rundir.MANIFEST).unlink()
    res = _validate(str(run))
    assert res.exit_code == 1
    assert res.output.startswith(f"{run}/manifest.json: missing: every run directory has a "
                                 "manifest\n")


def test_optional_files_may_be_missing(tmp_path):
    run = _copy(STOCK_TUNED / "stock", tmp_path)
    for f in (rundir.REQUESTS, rundir.HOOKS, rundir.TIMELINES):
        (run / f).unlink()
    res = _validate(str(run))
    assert res.exit_code == 0, res.output
    assert res.output.rstrip().endswith("): manifest")


def test_torn_last_line_is_a_warning(tmp_path):
    run = _copy(STOCK_TUNED / "stock", tmp_path)
    text = (run / rundir.REQUESTS).read_text()
    (run / rundir.REQUESTS).write_text(text + text.splitlines()[0][:40])
    res = _validate(str(run))
    assert res.exit_code == 0, res.output
    out = res.output.splitlines()
    assert out[0] == (f"{run}/requests.jsonl:17: warning: torn last line (a campaign killed "
                      "mid-write?): readers skip it")
    assert out[1].endswith("16 requests, 64 hooks, 16 timelines, 1 warning(s)")
    # a bad line that is not the last one (or ends with a newline) is an error
    (run / rundir.REQUESTS).write_text(text + text.splitlines()[0][:40] + "\n")
    assert _validate(str(run)).exit_code == 1


def test_capture_that_is_not_a_pcap_is_an_error(tmp_path):
    run = _copy(DATA / "nomad-lab-3runs", tmp_path)
    assert _validate(str(run)).output.rstrip().endswith("18 vim-events, capture")
    (run / rundir.CAPTURE).write_text("this is not a capture\n")
    res = _validate(str(run))
    assert res.exit_code == 1 and f"{run}/capture.pcap: not a pcap or pcapng file" in res.output


def test_labels_resolve_under_runs_dir_and_unknown_runs_exit_2(tmp_path):
    _copy(STOCK_TUNED / "stock", tmp_path / "runs", "stock")
    res = _validate("stock", "--runs-dir", str(tmp_path / "runs"))
    assert res.exit_code == 0 and res.output.startswith(f"{tmp_path}/runs/stock: valid")
    res = CliRunner().invoke(cli, ["validate", "nope", "--runs-dir", str(tmp_path)])
    assert res.exit_code != 0 and "no run directory 'nope'" in str(res.exception)


# -- versions --------------------------------------------------------------------------------


def _with_schema(tmp_path: Path, value) -> Path:
    run = _copy(STOCK_TUNED / "stock", tmp_path)
    RunDir(run).update_manifest(schema=value)
    return run


def test_version_1_is_read(tmp_path):
    run = _with_schema(tmp_path, "vimprof-run/1")
    res = _validate(str(run))
    assert res.exit_code == 0
    assert res.output == f"{run}: valid (vimprof-run/1): manifest, 16 requests, 64 hooks, " \
                         "16 timelines\n"


def test_newer_version_is_refused_by_validate_and_load(tmp_path):
    run = _with_schema(tmp_path, "vimprof-run/9")
    res = _validate(str(run))
    assert res.exit_code == 1
    first, last = res.output.splitlines()
    assert first.startswith(f"{run}/manifest.json:")
    for word in ("vimprof-run/9", "vimprof-run/0", "vimprof-run/1", "upgrade vimprof"):
        assert word in first
    assert last == f"{run}: 1 error(s) (vimprof-run/9: not a version this vimprof reads): " \
                   "manifest"
    with pytest.raises(schema.SchemaVersionError, match=r"vimprof-run/9.*reads vimprof-run/0"):
        vimprof.load(run)


def test_malformed_version_is_refused(tmp_path):
    run = _with_schema(tmp_path, 1)
    res = _validate(str(run))
    assert res.exit_code == 1 and "not a vimprof run directory version" in res.output
    with pytest.raises(schema.SchemaVersionError):
        vimprof.load(run)


# -- vimprof.load ----------------------------------------------------------------------------


def test_load_committed_run():
    df = vimprof.load(STOCK_TUNED / "stock")
    tls = RunDir(STOCK_TUNED / "stock").read(rundir.TIMELINES)
    assert list(df.columns) == ["label", "vim", "instance", "job", "run", "warmup", "complete",
                                "phase", "start_ns", "end_ns", "ms", "source"]
    assert len(df) == sum(len(t["phases"]) for t in tls) == 192
    assert df["instance"].nunique() == 16 and set(df["label"]) == {"stock"}
    assert set(df["vim"]) == {"nomad"}
    # campaign.warmup_runs = 2: runs 0 and 1
    assert sorted(df.loc[df["warmup"], "run"].unique()) == [0, 1]
    first = tls[0]
    row = df[(df["instance"] == first["instance"]) & (df["phase"] == "total")].iloc[0]
    p = first["phases"]["total"]
    assert (row["start_ns"], row["end_ns"], row["ms"], row["source"]) == \
        (p["start_ns"], p["end_ns"], p["ms"], p["source"])
    assert row["job"] == first["job"] and row["run"] == first["run"]
    assert str(df["start_ns"].dtype) == "Int64" and str(df["ms"].dtype) == "float64"


def test_load_by_label_and_without_timelines(tmp_path):
    _copy(STOCK_TUNED / "tuned", tmp_path / "runs", "tuned")
    df = vimprof.load("tuned", runs_dir=tmp_path / "runs")
    assert set(df["label"]) == {"tuned"} and len(df) > 0
    with pytest.raises(vimprof.errors.VimprofError, match="vimprof analyze"):
        vimprof.load(DATA / "nomad-lab-3runs")


def test_load_without_pandas_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    from vimprof.notebook import NotebookExtraMissing

    with pytest.raises(ImportError, match=r"pip install 'vimprof\[notebook\]'") as info:
        vimprof.load(STOCK_TUNED / "stock")
    assert isinstance(info.value, NotebookExtraMissing)


def test_import_vimprof_does_not_import_pandas_or_jsonschema():
    import subprocess

    code = ("import sys, vimprof, vimprof.rundir, vimprof.campaigns.engine; "
            "print('pandas' in sys.modules, 'jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
