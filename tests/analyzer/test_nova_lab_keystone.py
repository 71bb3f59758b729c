"""A real OpenStack boot whose token nova-api had never seen (tests/data/nova-lab-keystone).

Recorded with `tcpdump -i any -s 0` in the OpenStack lab's namespace (hostn; Nova 26.2.2 Zed
from Debian 12) on the nova-api, keystone, glance and AMQP ports, while a fresh openstacksdk
connection (a new token) booted one diskless micro-VNF at once (no earlier request that would
have warmed nova-api's token cache) and deleted it; scrubbed with
`python -m vimprof.analyzer.scrub` (170 token occurrences blanked, lengths kept).

nova-api validates the new token with Keystone (GET /v3/auth/tokens) before anything else;
glance-api validates it again when nova-api passes it on with the image GET. Independent
source: Keystone's uwsgi log, same machine and clock: "GET /v3/auth/tokens => generated 3417
bytes in 716 msecs" for nova-api's validation.
"""

from __future__ import annotations

from pathlib import Path

from vimprof.analyzer.pipeline import analyze
from vimprof.phases import NOVA

CAPTURE = Path(__file__).parent.parent / "data" / "nova-lab-keystone" / "capture.pcap"
SERVER = "9381fd82-3120-4f97-8981-7fdff693f041"


def test_token_validation_by_nova_api_is_the_keystone_phase():
    tls, d, warnings = analyze(CAPTURE)
    assert d.warnings == [] and warnings == [] and d.counts["tcp_gaps"] == 0
    (tl,) = tls
    assert tl["instance"] == SERVER and tl["complete"] and tl["issues"] == []
    ph = tl["phases"]
    assert set(ph) >= set(NOVA.all) | {"keystone", "glance", "spawn", "delete"}
    checks = sorted(e["t_ns"] for e in tl["events"]
                    if e["name"] == "keystone token validation request")
    assert len(checks) == 2  # nova-api's, then glance-api's during the first image GET
    ks, api, glance = ph["keystone"], ph["api"], ph["glance"]
    # nova-api checks the token first thing: 2.3 ms after the POST, before any glance GET
    assert ks["start_ns"] == checks[0]
    assert 0 < ks["start_ns"] - api["start_ns"] < 5_000_000
    assert ks["end_ns"] < glance["start_ns"] < checks[1] < glance["end_ns"] < api["end_ns"]
    # glance-api's validation (inside the GET) is not nova-api's: keystone ends before it
    assert abs(ks["ms"] - 716) < 5  # Keystone's own log: 716 ms
    assert ks["ms"] / api["ms"] > 0.5  # a cold token cache dominates the API phase
