from __future__ import annotations

from vimprof.analyzer.decoders.http import HttpConnection, HttpMessage
from vimprof.analyzer.tcp import Connection

CONN = Connection(1, ("10.0.0.1", 40000), ("10.0.0.2", 4646), True, 0)


def make():
    out: list[HttpMessage] = []
    return HttpConnection(CONN, out.append), out


def feed_split(h, d, data: bytes, t0: int, step: int = 7):
    """Feed data in small chunks, chunk i at time t0 + i."""
    for i in range(0, len(data), step):
        h.data(d, t0 + i // step, data[i : i + step])


def test_request_and_response_with_content_length_and_times():
    h, out = make()
    req = b'PUT /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{"Job":{"a"}'
    feed_split(h, 0, req, 100)
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    h.data(1, 500, resp[:20])
    h.data(1, 501, resp[20:])
    assert [m.kind for m in out] == ["request", "response"]
    q, r = out
    assert (q.method, q.path, q.body, q.headers["host"]) == (
        "PUT",
        "/v1/jobs",
        b'{"Job":{"a"}',
        "x",
    )
    assert q.t_first_ns == 100 and q.t_last_ns == 100 + (len(req) - 1) // 7
    assert r.status == 200 and r.body == b"{}" and r.request is q
    assert (r.t_first_ns, r.t_last_ns) == (500, 501)
    assert q.conn == CONN.tuple


def test_chunked_body_and_keep_alive_pipelining():
    h, out = make()
    reqs = (
        b"GET /v1/a HTTP/1.1\r\n\r\n"
        b"HEAD /v1/b HTTP/1.1\r\n\r\n"
        b"DELETE /v1/job/web?purge=true HTTP/1.1\r\n\r\n"
    )
    h.data(0, 1, reqs)
    resps = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"  # HEAD: no body follows
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    )
    feed_split(h, 1, resps, 10, step=5)
    reqs_out = [m for m in out if m.kind == "request"]
    resps_out = [m for m in out if m.kind == "response"]
    assert [m.method for m in reqs_out] == ["GET", "HEAD", "DELETE"]
    assert [m.body for m in resps_out] == [b"hello world", b"", b"abc"]
    assert [m.request.path for m in resps_out] == ["/v1/a", "/v1/b", "/v1/job/web?purge=true"]


def test_secret_headers_are_dropped():
    h, out = make()
    h.data(
        0,
        1,
        b"GET / HTTP/1.1\r\nX-Nomad-Token: s3cret\r\nAuthorization: Bearer t0k\r\n"
        b"Cookie: a=b\r\nX-Auth-Token: k1\r\nx-subject-token: k2\r\nAccept: */*\r\n\r\n",
    )
    (m,) = out
    assert m.headers == {"accept": "*/*"}
    assert "s3cret" not in repr(m) and "t0k" not in repr(m)


def test_read_until_close_response_and_interim_100():
    h, out = make()
    h.data(0, 1, b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi")
    h.data(1, 2, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nstream")
    h.data(1, 3, b"ing")
    assert [m.kind for m in out] == ["request"]
    h.close(4, "fin")
    r = out[-1]
    assert r.status == 200 and r.body == b"streaming" and r.t_last_ns == 3
    assert r.request is out[0]


def test_body_is_bounded():
    out: list[HttpMessage] = []
    h = HttpConnection(CONN, out.append, body_limit=10)
    h.data(0, 1, b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"z" * 100)
    assert out[0].body == b"z" * 10 and out[0].body_len == 100


def test_gap_inside_body_keeps_message_marked_incomplete():
    h, out = make()
    h.data(0, 1, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
    h.gap(0, 2, 5)
    h.data(0, 3, b"xyz")
    (m,) = out
    assert not m.complete and m.body == b"abxyz" and m.body_len == 10


def test_gap_in_headers_resyncs_on_next_request():
    h, out = make()
    h.data(0, 1, b"GET /lost HTTP/1.1\r\nHo")
    h.gap(0, 2, 30)
    h.data(0, 3, b"st: x\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    assert [m.path for m in out] == ["/next"]
    assert h.dropped == 1


def test_garbage_is_skipped_and_counted():
    h, out = make()
    h.data(0, 1, b"\x00\x03\x01\x02\x00binary junk\r\n\r\nGET /ok HTTP/1.1\r\n\r\n")
    assert [m.path for m in out] == ["/ok"]
    assert h.garbage_bytes > 0 and not h.encrypted


def test_tls_is_detected_and_never_parsed():
    h, out = make()
    # a ClientHello record header, then bytes that would parse as HTTP if it were plaintext
    h.data(0, 1, b"\x16\x03\x01\x02\x00" + b"GET /secret HTTP/1.1\r\n\r\n")
    h.data(1, 2, b"\x16\x03\x03\x00\x40" + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert h.encrypted and out == [] and h.garbage_bytes == 0
    # joined midway: application_data records
    h, out = make()
    h.data(0, 1, b"\x17\x03\x03\x00\x20" + b"GET /x HTTP/1.1\r\n\r\n")
    assert h.encrypted and out == []
