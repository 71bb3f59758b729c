"""oslo.messaging envelopes inside AMQP bodies, and the Nova objects they carry.

Format (oslo.messaging `_drivers/common.py` serialize_msg, `_drivers/amqpdriver.py`;
shared/design/nova-internals.md section 1): the body is JSON
`{"oslo.version": "2.0", "oslo.message": "<JSON string>"}`; the inner dict of a call/cast
holds method, args, namespace, version, _unique_id, (calls) _msg_id, _reply_q, _timeout,
and the request context flattened as `_context_<key>` (request_id, global_request_id,
timestamp, user, project_id, ... and _context_auth_token, a live Keystone token). A reply
holds result, failure, ending, _msg_id, _unique_id. Notifications (no envelope on the
unversioned path, or the same envelope) have event_type, payload, timestamp, message_id.

`decode_body(body)` returns an `OsloMessage` with every credential removed (SECRET_KEYS and
any key containing "auth_token", "password" or "secret", at any depth), or None when the
body is not JSON. Nova objects are dicts with "nova_object.name" and "nova_object.data".

Analyzer stage 3, decoders (vimprof/analyzer/__init__.py): an AmqpMessage's body in, an
`OsloMessage` out (called by builders/nova_phases.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SECRET_KEYS = frozenset(
    {"_context_auth_token", "auth_token", "x-auth-token", "x-subject-token", "token",
     "_context_service_token", "service_token"}
)
_SECRET_PARTS = ("auth_token", "password", "secret")


def scrub(obj: Any, depth: int = 0) -> Any:
    """A copy of `obj` without credential keys (see the module docstring)."""
    if depth > 60:
        return None
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str):
                low = k.lower()
                if low in SECRET_KEYS or any(p in low for p in _SECRET_PARTS):
                    continue
            out[k] = scrub(v, depth + 1)
        return out
    if isinstance(obj, list):
        return [scrub(v, depth + 1) for v in obj]
    return obj


@dataclass
class OsloMessage:
    """The parts of an oslo.messaging message the Nova phases use (no credentials).

    kind: "call" (has _msg_id and method), "cast" (method, no _msg_id), "reply" (_msg_id,
    no method), "notification" (event_type) or "other"; method; args (scrubbed dict);
    msg_id; unique_id (_unique_id: one per message, so a publish and its delivery share it);
    reply_q; request_id / global_request_id (from the _context_ keys); result /
    failure / ending (replies); event_type / payload (notifications); context_timestamp.
    """

    kind: str
    method: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    msg_id: str = ""
    unique_id: str = ""
    reply_q: str = ""
    request_id: str = ""
    global_request_id: str = ""
    context_timestamp: str = ""
    namespace: str = ""
    result: Any = None
    failure: Any = None
    ending: bool = False
    event_type: str = ""
    payload: Any = None


def _s(v: Any) -> str:
    return v if isinstance(v, str) else ""


def decode_body(body: bytes) -> OsloMessage | None:
    """The oslo message in an AMQP body, or None if it is not a JSON object (or cut short)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    inner = doc.get("oslo.message")
    if isinstance(inner, str):
        try:
            doc = json.loads(inner)
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
    method = _s(doc.get("method"))
    msg_id = _s(doc.get("_msg_id"))
    event_type = _s(doc.get("event_type"))
    if method:
        kind = "call" if msg_id else "cast"
    elif msg_id and ("result" in doc or "failure" in doc or "ending" in doc):
        kind = "reply"
    elif event_type:
        kind = "notification"
    else:
        kind = "other"
    args = doc.get("args")
    return OsloMessage(
        kind=kind,
        method=method,
        args=scrub(args) if isinstance(args, dict) else {},
        msg_id=msg_id,
        unique_id=_s(doc.get("_unique_id")),
        reply_q=_s(doc.get("_reply_q")),
        request_id=_s(doc.get("_context_request_id")),
        global_request_id=_s(doc.get("_context_global_request_id")),
        context_timestamp=_s(doc.get("_context_timestamp")),
        namespace=_s(doc.get("namespace")),
        result=scrub(doc.get("result")),
        failure=doc.get("failure") if isinstance(doc.get("failure"), str) else None,
        ending=doc.get("ending") is True,
        event_type=event_type,
        payload=scrub(doc.get("payload")),
    )


def obj_data(obj: Any, name: str | None = None) -> dict[str, Any] | None:
    """The "nova_object.data" of a Nova object dict (of class `name` if given), else None."""
    if not isinstance(obj, dict):
        return None
    if name is not None and obj.get("nova_object.name") != name:
        return None
    data = obj.get("nova_object.data")
    return data if isinstance(data, dict) else None


def obj_changes(obj: Any) -> list[str]:
    """The "nova_object.changes" field names of a Nova object dict ([] if none)."""
    ch = obj.get("nova_object.changes") if isinstance(obj, dict) else None
    return [c for c in ch if isinstance(c, str)] if isinstance(ch, list) else []


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def instance_uuids(msg: OsloMessage) -> list[str]:
    """Instance uuids a Nova RPC message is about (nova-internals.md section 1 table)."""
    args = msg.args
    out: list[str] = []

    def add(v: Any) -> None:
        if isinstance(v, str) and len(v) == 36 and v not in out:
            out.append(v)

    m = msg.method
    if m == "schedule_and_build_instances":
        for spec in _list(args.get("request_specs")):
            d = obj_data(spec)
            if d:
                add(d.get("instance_uuid"))
        for br in _list(args.get("build_requests")):
            d = obj_data(br)
            if d:
                add(d.get("instance_uuid"))
                add((obj_data(d.get("instance")) or {}).get("uuid"))
    elif m == "select_destinations":
        for u in _list(args.get("instance_uuids")):
            add(u)
        for key in ("spec_obj", "request_spec"):
            d = obj_data(args.get(key))
            if d:
                add(d.get("instance_uuid"))
    elif m in ("build_and_run_instance", "terminate_instance", "stop_instance",
               "start_instance", "reboot_instance"):
        add((obj_data(args.get("instance")) or {}).get("uuid"))
    elif m == "object_action":
        add((obj_data(args.get("objinst"), "Instance") or {}).get("uuid"))
    elif m == "update_instance_info":
        info = args.get("instance_info")
        d = obj_data(info, "Instance")
        if d:
            add(d.get("uuid"))
        lst = obj_data(info, "InstanceList")
        for o in _list((lst or {}).get("objects")):
            add((obj_data(o) or {}).get("uuid"))
    elif m == "delete_instance_info":
        add(args.get("instance_uuid"))
    elif m == "object_class_action_versions":
        # e.g. InstanceActionEvent.event_start(context, instance_uuid, event_name, ...)
        for v in _list(args.get("args"))[:3]:
            add(v)
        kw = args.get("kwargs")
        if isinstance(kw, dict):
            add(kw.get("instance_uuid"))
    return out
