"""TLS detection on VIM ports: encrypted traffic is reported, never parsed as plaintext.

A TLS record (RFC 8446 section 5.1, RFC 5246 section 6.2) starts with a 5-byte header:
content type u8 (20 change_cipher_spec, 21 alert, 22 handshake, 23 application_data,
24 heartbeat), legacy version u16 (0x0300-0x0304), length u16 (<= 2^14 + 2048).
A connection seen from its start opens with a handshake record (ClientHello); one joined
midway shows application_data records.

Analyzer stage 3, decoders (vimprof/analyzer/__init__.py): used by the protocol decoders on
a connection's first bytes.
"""

from __future__ import annotations

ENCRYPTED = "encrypted: cannot decode, use hooks or VIM events"
MAX_RECORD = (1 << 14) + 2048


def looks_like_tls(data: bytes | bytearray, from_start: bool = True) -> bool:
    """Whether `data` begins with a TLS record header (a handshake one if `from_start`)."""
    if len(data) < 5:
        return False
    ctype, major, minor = data[0], data[1], data[2]
    length = (data[3] << 8) | data[4]
    if major != 3 or minor > 4 or length == 0 or length > MAX_RECORD:
        return False
    if from_start:
        return ctype == 22
    return 20 <= ctype <= 24
