"""Units of the real-cluster path that need no server: access settings, jobspec checks,
timelines from Nomad's events."""

from __future__ import annotations

import json

import pytest

from vimprof.analyzer.builders.nomad_events import timelines_from_events
from vimprof.errors import VimprofError
from vimprof.pushers.nomad_access import ClusterAccess, _rfc3339_ns, check_version
from vimprof.pushers.nomad_jobspec import load

MS = 1_000_000


def test_access_from_env_and_flags(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("NOMAD_TOKEN", "s3cr3t-token")
    monkeypatch.setenv("NOMAD_CACERT", str(ca))
    a = ClusterAccess.from_env("https://198.18.5.2:4646/")
    assert a.addr == "https://198.18.5.2:4646" and a.token == "s3cr3t-token"
    assert a.ca_cert == str(ca) and a.tls
    assert "s3cr3t" not in repr(a)  # secrets stay out of logs and tracebacks
    assert ClusterAccess.from_env("https://h:4646", token="flag").token == "flag"
    kw = a.python_nomad()
    assert kw["host"] == "198.18.5.2" and kw["port"] == 4646 and kw["secure"]
    assert kw["verify"] == str(ca)


@pytest.mark.parametrize(("env", "message"), [
    ({"NOMAD_CACERT": "/nonexistent/ca.pem"}, "does not exist"),
    ({"NOMAD_CLIENT_CERT": "__cert__"}, "needs its key"),
    ({"NOMAD_TLS_SERVER_NAME": "server.global.nomad"}, "not https"),
])
def test_access_settings_that_cannot_work(monkeypatch, tmp_path, env, message):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    for k in ("NOMAD_TOKEN", "NOMAD_CACERT", "NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY",
              "NOMAD_TLS_SERVER_NAME"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, str(cert) if v == "__cert__" else v)
    with pytest.raises(VimprofError, match=message):
        ClusterAccess.from_env("http://198.18.5.2:4646")


def test_session_keeps_its_ca_against_requests_ca_bundle(monkeypatch, tmp_path):
    """requests lets REQUESTS_CA_BUNDLE override a session's verify; ours does not."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    s = ClusterAccess(addr="https://198.18.5.2:4646", ca_cert=str(ca)).session()
    seen = {}

    def send(request, **kw):
        seen.update(kw)
        raise RuntimeError("sent")

    monkeypatch.setattr(s, "send", send)
    with pytest.raises(RuntimeError):
        s.get("https://198.18.5.2:4646/v1/status/leader")
    assert seen["verify"] == str(ca)


def test_rfc3339_ns():
    assert _rfc3339_ns("1970-01-01T00:00:01.000000002Z") == 1_000_000_002
    assert _rfc3339_ns("1970-01-01T01:00:01+01:00") == 1_000_000_000
    assert _rfc3339_ns(None) is None


def _job(groups):
    return {"Job": {"ID": "x", "Type": "service", "TaskGroups": groups}}


@pytest.mark.parametrize(("groups", "group", "message"), [
    ([{"Name": "a", "Count": 2}], None, "more than one allocation"),
    ([{"Name": "a", "Count": 1}, {"Name": "b", "Count": 1}], None, "--job-group"),
    ([{"Name": "a", "Count": 1}], "z", "no task group 'z'"),
    ([{"Name": "a", "Count": 3}, {"Name": "b", "Count": 1}], "a", "must have count 1"),
    ([], None, "no task group"),
])
def test_jobspecs_that_make_no_single_instance(tmp_path, groups, group, message):
    f = tmp_path / "job.json"
    f.write_text(json.dumps(_job(groups)))
    with pytest.raises(VimprofError, match=message):
        load(f, ClusterAccess(addr="http://198.18.5.2:4646"), group)


def test_jobspec_renamed_and_tagged_per_run(tmp_path):
    f = tmp_path / "job.json"
    f.write_text(json.dumps(_job([{"Name": "a", "Count": 3}, {"Name": "b", "Count": 1}])))
    j = load(f, ClusterAccess(addr="http://198.18.5.2:4646"), "b")
    one = j.job("vimprof-x-abc-0001")
    assert one["ID"] == one["Name"] == "vimprof-x-abc-0001"
    assert one["Meta"]["vimprof"] == "1" and j.template["ID"] == "x"  # the template is untouched


def test_system_job_and_bad_json_are_refused(tmp_path):
    f = tmp_path / "job.json"
    f.write_text(json.dumps({"Job": {"ID": "s", "Type": "system", "TaskGroups": [{}]}}))
    with pytest.raises(VimprofError, match="system job"):
        load(f, ClusterAccess(addr="http://198.18.5.2:4646"))
    f.write_text("{not json")
    with pytest.raises(VimprofError, match="not valid JSON"):
        load(f, ClusterAccess(addr="http://198.18.5.2:4646"))


def _events(alloc, t0):
    ev = {"source": "vim", "subject": alloc}
    return [
        {**ev, "via": "event-stream", "name": "Allocation created", "t_ns": t0 + 5 * MS},
        {**ev, "name": "Received", "t_ns": t0 + 20 * MS, "task": "t"},
        {**ev, "name": "Started", "t_ns": t0 + 120 * MS, "task": "t"},
        {**ev, "via": "event-stream", "name": "Allocation running", "t_ns": t0 + 900 * MS},
        {**ev, "via": "event-stream", "name": "Allocation complete", "t_ns": t0 + 1300 * MS},
    ]


def test_timelines_from_events_phases_and_sources():
    t0 = 1_000 * 10**9
    req = {"vim": "nomad", "run": 0, "job_id": "vimprof-j-0000", "alloc_id": "a1",
           "t_submit_ns": t0, "t_registered_ns": t0 + 4 * MS, "t_stop_ns": t0 + 1000 * MS}
    (tl,) = timelines_from_events([req], _events("a1", t0), set(), "the capture is TLS-encrypted")
    p = tl["phases"]
    assert tl["complete"] and tl["run"] == 0 and tl["instance"] == "a1"
    assert {k: v["ms"] for k, v in p.items()} == {
        "api": 4.0, "scheduling": 20.0, "task_start": 100.0, "notification": 780.0,
        "instantiation": 880.0, "total": 900.0, "stop": 300.0}
    assert p["api"]["source"] == "client" and p["task_start"]["source"] == "vim"
    assert p["total"]["source"] == "client+vim"
    assert [i.split(":")[0] for i in tl["issues"]] == ["client_pickup not measured",
                                                      "commit not measured"]


def test_timelines_from_events_only_where_the_wire_gave_none():
    t0 = 10**12
    reqs = [{"alloc_id": "a1", "t_submit_ns": t0}, {"alloc_id": "a2", "t_submit_ns": t0}]
    evs = _events("a1", t0) + [e for e in _events("a2", t0) if "via" not in e]
    # a1 has a wire timeline; a2 has task events but no event-stream record (a lab run)
    assert timelines_from_events(reqs, evs, {"a1"}, "x") == []


@pytest.mark.parametrize("version", ["1.6.3", "1.4.0", "1.11.3", "1.7.0-beta.1+ent"])
def test_supported_versions(version):
    check_version(version)


@pytest.mark.parametrize("version", ["1.3.16", "0.12.12", "1.0.0"])
def test_older_than_1_4_names_the_missing_api(version):
    with pytest.raises(VimprofError, match=r"older than v1.4.*ExpirationTime"):
        check_version(version)
