"""The facts a real OpenStack lab capture must yield (tests/data/nova-lab-delete).

Recorded passively with `tcpdump -i any -s 0` in the OpenStack lab's network namespace
(hostn: Nova 26.2.2 Zed from Debian 12, RabbitMQ, nova-api at 198.18.2.2:8774) while another
session exercised the lab; cut to the 1.2 s around one `DELETE /v2.1/servers/<id>` (159
packets, every connection joined midway, Linux SLL2) and scrubbed with
`python -m vimprof.analyzer.scrub` (Keystone tokens in X-Auth-Token and
`_context_auth_token` blanked, lengths kept). In that lab state the delete failed on the
compute host (neutron answered 500), so the instance went to vm_state error and the
InstanceActionEvent finished with a failure. No boot is in this capture: a boot capture of
the lab is still to be recorded (test_nova.py checks the boot path on built frames).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vimprof.analyzer.decoders.oslo import decode_body
from vimprof.analyzer.pipeline import analyze, decode_capture

CAPTURE = Path(__file__).parent.parent / "data" / "nova-lab-delete" / "capture.pcap"
SERVER = "7ed31cba-0cf0-44ce-9fe4-b69c8ce6c6b2"
REQ = "req-cc929ede-4b5c-4af3-8c15-4ca4a902b680"


@pytest.fixture(scope="module")
def decoded():
    return decode_capture(CAPTURE)


def test_real_amqp_and_oslo_traffic_decodes_cleanly(decoded):
    d = decoded
    assert d.warnings == [] and d.counts["tcp_gaps"] == 0
    assert d.counts["amqp_messages"] == 26 and d.counts["http_messages"] == 23
    kinds = {(m.kind, m.exchange, m.routing_key) for m in d.amqp}
    assert ("publish", "nova", "compute.hostn") in kinds
    assert ("deliver", "nova", "compute.hostn") in kinds
    assert ("publish", "nova", "conductor") in kinds
    for m in d.amqp:
        assert m.complete and len(m.body) == m.body_size
        assert m.properties.get("content_type") == "application/json"
        om = decode_body(m.body)
        assert om is not None and om.kind in ("call", "cast", "reply")
    # each message crosses the broker twice: a publish and a delivery with the same _unique_id
    ids = {}
    for m in d.amqp:
        ids.setdefault(decode_body(m.body).unique_id, set()).add(m.kind)
    assert all(k == {"publish", "deliver"} for k in ids.values())


def test_delete_path_events(decoded):
    tls, d, warnings = analyze(CAPTURE)
    assert warnings == []
    (tl,) = tls
    assert tl["vim"] == "nova" and tl["instance"] == SERVER and not tl["complete"]
    names = [e["name"] for e in tl["events"]]
    assert names == [
        "DELETE /servers request",
        "terminate_instance cast",
        "instance action event compute_terminate_instance start",
        "DELETE /servers response",
        "instance save vm_state=error",
        "instance action event compute_terminate_instance finish",
        "instance save task_state=None",
    ]
    ev = {e["name"]: e for e in tl["events"]}
    assert ev["terminate_instance cast"]["attrs"]["routing_key"] == "compute.hostn"
    assert ev["terminate_instance cast"]["attrs"]["request_id"] == REQ
    assert ev["DELETE /servers response"]["attrs"]["status"] == 204
    assert ev["instance action event compute_terminate_instance finish"]["attrs"]["failure"]
    # nova-api answered 204 before compute finished: 256 ms DELETE -> 204
    t = {n: e["t_ns"] for n, e in ev.items()}
    assert round((t["DELETE /servers response"] - t["DELETE /servers request"]) / 1e6) == 256
    assert t["terminate_instance cast"] < t["DELETE /servers response"]
    # the delete never completed (no 404, no destroy): the phase is left out, with the reason
    assert tl["phases"] == {}
    assert tl["issues"] == [
        "missing event POST /servers request for this server (boot not captured)",
        "delete left out: missing event GET /servers/<id> 404 or instance destroy or "
        "instance save vm_state=deleted",
    ]
    text = json.dumps(tl)
    assert "gAAAA" not in text and "auth_token" not in text
