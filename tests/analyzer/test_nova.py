"""AMQP 0-9-1 + oslo.messaging decoding and Nova server timelines, on frames built per the
AMQP 0-9-1 spec and the oslo.messaging envelope (shared/design/nova-internals.md).

Real Nova test data is pending: no OpenStack lab was available to record a capture
(`vimprof lab` knows only nomad so far); the boot below follows the message sequence of
nova-internals.md section 2 with Nova 26 (Zed) method names and argument shapes.
"""

from __future__ import annotations

import json

from vimprof.analyzer import analyze_capture
from vimprof.analyzer.decoders.amqp import AmqpConnection, AmqpMessage, AmqpStats
from vimprof.analyzer.decoders.oslo import decode_body, instance_uuids
from vimprof.analyzer.pipeline import decode_capture
from vimprof.analyzer.tcp import Connection

from . import wire

UUID = "8d9a1b6e-3c2f-4e5a-9b7c-0d1e2f3a4b5c"
IMG = "11111111-2222-3333-4444-555555555555"
TOKEN = "gAAAAABsecret-keystone-token"
MS = 1_000_000
T0 = 1_800_000_000 * 1_000_000_000
RABBIT = ("10.0.0.5", 5672)


def _conn(syn=True):
    return Connection(1, ("10.0.0.6", 42000), RABBIT, syn, 0)


def _collect(syn=True):
    out: list[AmqpMessage] = []
    stats = AmqpStats()
    return AmqpConnection(_conn(syn), out.append, stats), out, stats


def ctx(**extra):
    d = {
        "_context_request_id": "req-nova-0001",
        "_context_global_request_id": "req-client-0001",
        "_context_auth_token": TOKEN,
        "_context_timestamp": "2027-01-15T08:00:00.000000",
        "_unique_id": extra.pop("_unique_id"),
    }
    d.update(extra)
    return d


def instance(**data):
    return {"nova_object.name": "Instance", "nova_object.namespace": "nova",
            "nova_object.version": "2.7", "nova_object.data": {"uuid": UUID, **data},
            "nova_object.changes": list(data)}


def test_publish_split_across_segments_with_properties():
    h, out, stats = _collect()
    body = wire.oslo_body(ctx(method="build_and_run_instance", _unique_id="u1",
                              args={"instance": instance(), "node": "host1"}))
    data = (wire.AMQP_HEADER + wire.amqp_frame(8, 0, b"")
            + wire.amqp_publish(1, "nova", "compute.host1")
            + wire.amqp_content(1, body, frame_max=50, content_type="application/json",
                                headers=b"\x03abcS\x00\x00\x00\x01x", delivery_mode=2,
                                expiration="60000"))
    for i in range(0, len(data), 7):
        h.data(0, T0 + i, data[i : i + 7])
    (m,) = out
    assert (m.kind, m.exchange, m.routing_key, m.channel) == ("publish", "nova", "compute.host1", 1)
    assert m.properties == {"content_type": "application/json", "headers": {"size": 10},
                            "delivery_mode": 2, "expiration": "60000"}
    assert m.body == body and m.complete and m.body_size == len(body)
    hdr_len = len(wire.AMQP_HEADER) + 8
    assert m.t_first_ns == T0 + hdr_len // 7 * 7
    assert m.t_last_ns == T0 + (len(data) - 1) // 7 * 7
    assert stats.garbage_bytes == 0 and m.sender == "10.0.0.6"
    om = decode_body(m.body)
    assert om.kind == "cast" and om.method == "build_and_run_instance"
    assert om.request_id == "req-nova-0001" and om.global_request_id == "req-client-0001"
    assert instance_uuids(om) == [UUID]
    assert TOKEN not in json.dumps(om.__dict__)


def test_deliver_gap_loses_one_message_and_resyncs():
    h, out, stats = _collect(syn=False)  # joined midway: no protocol header
    b1 = wire.oslo_body(ctx(method="select_destinations", _unique_id="u1", _msg_id="m1",
                            _reply_q="reply_x", args={"instance_uuids": [UUID]}))
    b2 = wire.oslo_body({"result": [], "failure": None, "ending": True, "_msg_id": "m1",
                         "_unique_id": "u2"})
    m1 = wire.amqp_deliver(2, "nova", "scheduler") + wire.amqp_content(2, b1, frame_max=40)
    m2 = wire.amqp_deliver(2, "", "reply_x") + wire.amqp_content(2, b2)
    h.data(1, 1, b"\x00\x13garbage-before-sync" + m1[:60])
    h.gap(1, 2, 40)
    h.data(1, 3, m1[100:] + m2)
    assert [m.routing_key for m in out] == ["reply_x"]
    assert out[0].kind == "deliver" and out[0].consumer_tag == "ctag1.x"
    assert decode_body(out[0].body).kind == "reply"
    assert stats.lost_messages >= 1 and stats.garbage_bytes > 0


def test_tls_and_other_protocol_versions_are_reported_not_parsed():
    h, out, stats = _collect()
    h.data(0, 1, b"\x16\x03\x01\x00\xa0" + wire.AMQP_HEADER + wire.amqp_publish(1, "n", "k"))
    assert out == [] and stats.encrypted == 1
    assert "encrypted: cannot decode, use hooks or VIM events" in stats.warnings[0]
    h, out, stats = _collect()
    h.data(0, 1, b"AMQP\x01\x01\x00\x0a" + b"\x00" * 40)
    assert out == [] and "not 0-9-1" in stats.warnings[0]


def test_oslo_envelope_variants():
    assert decode_body(b"not json") is None
    assert decode_body(b'{"oslo.message": "{broken"}') is None
    n = decode_body(json.dumps({"event_type": "instance.create.end", "payload": {
        "uuid": UUID, "auth_token": TOKEN}, "_context_auth_token": TOKEN}).encode())
    assert n.kind == "notification" and TOKEN not in json.dumps(n.__dict__)
    hb = decode_body(wire.oslo_body({"_msg_id": "m", "ending": False, "result": None}))
    assert hb.kind == "reply" and not hb.ending


# -- a whole boot and delete -----------------------------------------------------------------


class Scene:
    def __init__(self):
        self.packets: list[tuple[int, bytes]] = []
        self.flows: list[wire.Flow] = []

    def flow(self, client, server, t_ms):
        f = wire.Flow(client=client, server=server)
        f.t = T0 + t_ms * MS - 10
        f.handshake()
        self.flows.append(f)
        return f

    def at(self, f, t_ms, d, payload):
        f.t = T0 + int(t_ms * MS) - 1
        f.send(d, payload, dt=1)

    def pcap(self):
        recs = sorted((r for f in self.flows for r in f.eth_records()), key=lambda r: r[0])
        return wire.pcap(recs, nano=True)


def http_req(method, path, headers=b"", body=b""):
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + headers
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def http_resp(status, headers=b"", body=b""):
    return (f"HTTP/1.1 {status} X\r\n".encode() + headers
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def boot_and_delete() -> bytes:
    s = Scene()
    api = s.flow(("10.0.0.9", 50000), ("10.0.0.2", 8774), -5)
    ks = s.flow(("10.0.0.2", 50100), ("10.0.0.3", 5000), -4)
    gl = s.flow(("10.0.0.2", 50200), ("10.0.0.4", 9292), -3)
    a_api = s.flow(("10.0.0.2", 41000), RABBIT, -3)
    a_cond = s.flow(("10.0.0.6", 42000), RABBIT, -3)
    a_sched = s.flow(("10.0.0.7", 43000), RABBIT, -3)
    a_comp = s.flow(("10.0.0.8", 44000), RABBIT, -3)
    for f in (a_api, a_cond, a_sched, a_comp):
        s.at(f, -2, 0, wire.AMQP_HEADER)
    auth = b"X-Auth-Token: " + TOKEN.encode() + b"\r\n"
    post = json.dumps({"server": {"name": "vnf", "imageRef": IMG, "flavorRef": "1",
                                  "networks": "none"}}).encode()
    s.at(api, 0, 0, http_req("POST", "/v2.1/servers", auth
                             + b"X-OpenStack-Request-ID: req-client-0001\r\n", post))
    s.at(ks, 2, 0, http_req("GET", "/v3/auth/tokens", auth + b"X-Subject-Token: " + TOKEN.encode()
                            + b"\r\n"))
    s.at(ks, 4, 1, http_resp(200, b"X-Subject-Token: " + TOKEN.encode() + b"\r\n", b"{}"))
    s.at(gl, 5, 0, http_req("GET", f"/v2/images/{IMG}", auth
                            + b"X-OpenStack-Request-ID: req-client-0001\r\n"))
    s.at(gl, 7, 1, http_resp(200, b"", json.dumps({"id": IMG}).encode()))

    def rpc(f, t, d, exchange, key, inner, ch=1):
        frame = wire.amqp_publish(ch, exchange, key) if d == 0 else wire.amqp_deliver(
            ch, exchange, key)
        s.at(f, t, d, frame + wire.amqp_content(ch, wire.oslo_body(inner), frame_max=1000,
                                                content_type="application/json"))

    spec = {"nova_object.name": "RequestSpec", "nova_object.data": {"instance_uuid": UUID}}
    sb = ctx(method="schedule_and_build_instances", _unique_id="u-sb", namespace="compute_task",
             args={"request_specs": [spec], "build_requests": []})
    rpc(a_api, 8, 0, "nova", "conductor", sb)
    s.at(api, 10, 1, http_resp(
        202, b"x-openstack-request-id: req-nova-0001\r\n",
        json.dumps({"server": {"id": UUID, "links": []}}).encode()))
    rpc(a_cond, 12, 1, "nova", "conductor", sb)
    sel = ctx(method="select_destinations", _unique_id="u-sel", _msg_id="msg-sel",
              _reply_q="reply_cond", args={"instance_uuids": [UUID], "spec_obj": spec})
    rpc(a_cond, 15, 0, "nova", "scheduler", sel)
    rpc(a_sched, 16, 1, "nova", "scheduler", sel)
    reply = {"result": [[{"nova_object.name": "Selection", "nova_object.data": {
        "service_host": "host1"}}]], "failure": None, "ending": True, "_msg_id": "msg-sel",
        "_unique_id": "u-rep"}
    rpc(a_sched, 40, 0, "", "reply_cond", reply)
    rpc(a_cond, 41, 1, "", "reply_cond", reply)
    build = ctx(method="build_and_run_instance", _unique_id="u-build",
                args={"instance": instance(vm_state="building"), "node": "host1"})
    rpc(a_cond, 45, 0, "nova", "compute.host1", build)
    rpc(a_comp, 46, 1, "nova", "compute.host1", build)
    saves = [(60, {"task_state": "networking"}), (70, {"task_state": "block_device_mapping"}),
             (75, {"task_state": "spawning"}),
             (300, {"vm_state": "active", "task_state": None, "power_state": 1})]
    for i, (t, data) in enumerate(saves):
        rpc(a_comp, t, 0, "nova", "conductor",
            ctx(method="object_action", _unique_id=f"u-save{i}", _msg_id=f"msg-save{i}",
                _reply_q="reply_comp", args={"objinst": instance(**data), "objmethod": "save"}))
    rpc(a_comp, 305, 0, "scheduler_fanout", "",
        ctx(method="update_instance_info", _unique_id="u-info",
            args={"host_name": "host1", "instance_info": instance()}))
    s.at(api, 350, 0, http_req("GET", f"/v2.1/servers/{UUID}", auth))
    s.at(api, 352, 1, http_resp(200, b"", json.dumps({"server": {"id": UUID,
                                                                  "status": "BUILD"}}).encode()))
    s.at(api, 400, 0, http_req("GET", f"/v2.1/servers/{UUID}", auth))
    s.at(api, 402, 1, http_resp(200, b"", json.dumps({"server": {"id": UUID,
                                                                  "status": "ACTIVE"}}).encode()))
    s.at(api, 1000, 0, http_req("DELETE", f"/v2.1/servers/{UUID}", auth))
    rpc(a_api, 1005, 0, "nova", "compute.host1",
        ctx(method="terminate_instance", _unique_id="u-term",
            args={"instance": instance(), "bdms": []}))
    s.at(api, 1010, 1, http_resp(204))
    rpc(a_comp, 1200, 0, "nova", "conductor",
        ctx(method="object_action", _unique_id="u-del", _msg_id="msg-del", _reply_q="reply_comp",
            args={"objinst": instance(vm_state="deleted"), "objmethod": "save"}))
    s.at(api, 1300, 0, http_req("GET", f"/v2.1/servers/{UUID}", auth))
    s.at(api, 1302, 1, http_resp(404, b"", b"{}"))
    return s.pcap()


def test_nova_boot_and_delete_timeline(tmp_path):
    p = tmp_path / "nova.pcap"
    p.write_bytes(boot_and_delete())
    d = decode_capture(p)
    assert d.warnings == [], d.warnings
    assert d.counts["amqp_messages"] == 15
    (tl,) = analyze_capture(p)
    assert tl["vim"] == "nova" and tl["instance"] == UUID
    assert tl["complete"] and tl["issues"] == [], tl["issues"]
    ms = {k: v["ms"] for k, v in tl["phases"].items()}
    assert ms == {"api": 10.0, "keystone": 2.0, "glance": 2.0, "conductor": 7.0,
                  "scheduler": 26.0, "conductor_build": 4.0, "compute": 255.0, "network": 10.0,
                  "spawn": 225.0, "ready": 102.0, "total": 402.0, "delete": 302.0}
    ph = tl["phases"]
    assert ph["scheduler"]["from"] == "select_destinations call"
    assert ph["scheduler"]["to"] == "select_destinations reply"
    assert ph["ready"]["to"] == "GET /servers/<id> ACTIVE"
    assert ph["delete"]["to"] == "GET /servers/<id> 404"
    names = [e["name"] for e in tl["events"]]
    assert names.count("build_and_run_instance cast") == 1  # publish + deliver count once
    build = next(e for e in tl["events"] if e["name"] == "build_and_run_instance cast")
    assert build["attrs"]["node"] == "host1" and build["attrs"]["routing_key"] == "compute.host1"
    assert build["attrs"]["request_id"] == "req-client-0001"
    text = json.dumps(tl)
    assert TOKEN not in text and "auth_token" not in text.lower()


def test_nova_crosscheck_with_instance_actions_and_the_client(tmp_path):
    p = tmp_path / "nova.pcap"
    p.write_bytes(boot_and_delete())
    sec = (T0 + 46 * MS) // 1_000_000_000 * 1_000_000_000  # MariaDB: whole seconds
    actions = [{"subject": UUID, "name": "compute__do_build_and_run_instance", "vim": "nova",
                "source": "vim", "t_ns": sec, "end_ns": sec}]
    requests = [{"server_id": UUID, "run": 0, "t_registered_ns": T0 + 10 * MS + 300_000,
                 "t_running_ns": T0 + 403 * MS}]
    (tl,) = analyze_capture(p, {UUID: 0}, vim_events=actions, requests=requests)
    assert tl["run"] == 0
    cc = tl["crosscheck"]
    assert cc["disagreements"] == 0 and len(cc["checks"]) == 4, cc
    # an instance action 3 s off is flagged
    actions[0]["t_ns"] += 3_000_000_000
    (tl,) = analyze_capture(p, vim_events=actions, requests=requests)
    assert tl["crosscheck"]["disagreements"] == 1
    assert any("instance action event start" in i for i in tl["issues"])
