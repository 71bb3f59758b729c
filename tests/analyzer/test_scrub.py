"""Scrubbing credentials out of captures: what is blanked, what survives, and the test data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.analyzer import wire
from vimprof.analyzer import analyze_capture
from vimprof.analyzer.pipeline import decode_capture
from vimprof.analyzer.scrub import find_secrets, scrub_pcap
from vimprof.errors import VimprofError

DATA = Path(__file__).parent.parent / "data"
JWT = "eyJhbGciOiJSUzI1NiJ9." + "eyJzdWIiOiJub2RlIn0" * 20 + ".c2lnbmF0dXJl"
TOKEN = "TOPSECRET-0000-1111-2222-333344445555"
C, S = "198.18.0.2", "198.18.0.1"


def secret_capture(path: Path) -> bytes:
    """A register over HTTP with X-Nomad-Token, then a Node.UpdateAlloc whose AuthToken JWT is
    split across two TCP segments and two yamux Data frames (as Nomad's client sends it)."""
    body = json.dumps({"Job": {"ID": "web"}}).encode()
    http = (f"PUT /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Nomad-Token: {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    rpc = wire.rpc_request("Node.UpdateAlloc", 7, {
        "Alloc": [{"ID": "a" * 36, "ClientStatus": "running"}], "AuthToken": JWT})
    cut = rpc.index(JWT.encode()) + 300  # inside the JWT
    first = b"\x06" + wire.yamux(1, 1, 1) + wire.yamux(0, 0, 1, b"\x01" + rpc[:cut])
    second = wire.yamux(0, 0, 1, rpc[cut:])
    frames = [
        (1_000, wire.tcp(40000, 4646, 1, payload=http)),
        (2_000, wire.tcp(40001, 4647, 1, payload=first)),
        (3_000, wire.tcp(40001, 4647, 1 + len(first), payload=second[:5])),  # header split too
        (4_000, wire.tcp(40001, 4647, 1 + len(first) + 5, payload=second[5:])),
    ]
    data = wire.pcap([(t, wire.sll2(wire.ipv4(C, S, seg))) for t, seg in frames],
                     linktype=276, nano=True)
    path.write_bytes(data)
    return data


def test_scrub_blanks_every_credential_and_keeps_the_messages(tmp_path):
    raw = secret_capture(tmp_path / "in.pcap")
    before = find_secrets(tmp_path / "in.pcap")
    assert len(before) >= 2  # the header value and the JWT
    # the analyzer itself never lets a credential through
    d = decode_capture(tmp_path / "in.pcap")
    assert all("x-nomad-token" not in m.headers for m in d.http)
    assert TOKEN not in json.dumps(analyze_capture(tmp_path / "in.pcap"), default=str)

    replaced = scrub_pcap(tmp_path / "in.pcap", tmp_path / "out.pcap")
    out = (tmp_path / "out.pcap").read_bytes()
    assert len(out) == len(raw) and replaced == len(TOKEN) + len(JWT)
    assert TOKEN.encode() not in out and b"eyJ" not in out
    assert find_secrets(tmp_path / "out.pcap") == []
    # lengths and framing survive: the same messages decode, with the credential blanked
    after = decode_capture(tmp_path / "out.pcap")
    assert [m.method for m in after.rpc] == [m.method for m in d.rpc] == ["Node.UpdateAlloc"]
    assert after.warnings == d.warnings
    alloc = after.rpc[0].body["Alloc"][0]
    assert alloc["ClientStatus"] == "running"


def test_not_a_pcap_is_refused(tmp_path):
    (tmp_path / "x.pcap").write_text("not a capture at all, really")
    with pytest.raises(VimprofError, match="pcap"):
        scrub_pcap(tmp_path / "x.pcap", tmp_path / "y.pcap")


@pytest.mark.parametrize(
    "name",
    ["nomad-dev-mock.pcap", "nomad-lab-3runs/capture.pcap", "nova-lab-delete/capture.pcap",
     "nova-lab-boot/capture.pcap", "nova-lab-keystone/capture.pcap",
     "nomad163-lab-3runs/capture.pcap"],
)
def test_committed_captures_hold_no_credential(name):
    assert find_secrets(DATA / name) == []


def test_v16_node_secret_on_the_wire_is_blanked(nomad_lab, tmp_path):
    """Nomad v1.6 clients send their node SecretID as the AuthToken of every RPC (no node
    identity JWT yet: client/client.go secretNodeID): a real lab capture carries it, the
    scrubbed copy does not, and analyzes to the same timelines."""
    import subprocess
    import sys

    secret = (Path(nomad_lab.lab_dir) / "client" / "data" / "client" / "secret-id").read_text()
    assert len(secret.strip()) == 36
    res = subprocess.run([sys.executable, "-m", "vimprof.cli", "capture", "--runs", "1",
                          "--label", "sec", "--no-analyze"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    raw = tmp_path / "runs" / "sec" / "capture.pcap"
    assert nomad_lab.nomad_version.startswith("Nomad v1.6"), nomad_lab.nomad_version
    assert secret.strip().encode() in raw.read_bytes()
    assert any(secret.strip()[:12] in f for f in find_secrets(raw))
    out = tmp_path / "scrubbed.pcap"
    scrub_pcap(raw, out)
    assert secret.strip().encode() not in out.read_bytes()
    assert find_secrets(out) == []
    assert analyze_capture(out) == analyze_capture(raw)
