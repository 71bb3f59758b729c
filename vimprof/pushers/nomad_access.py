"""How vimprof reaches a user's Nomad cluster: address, ACL token, TLS, and a preflight check.

The settings and their environment variables are the Nomad CLI's (command/meta.go): NOMAD_TOKEN,
NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME. `preflight()` runs
before the first request of a campaign and turns every problem a user can fix into one line:
unreachable, a CA that does not match, a wrong or expired token, a token without a capability
vimprof needs (submit-job, read-job, list-jobs: nomad/job_endpoint.go, acl/policy.go), a
cluster older than the oldest release vimprof supports.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from vimprof.errors import VimprofError

MIN_VERSION = (1, 4)  # the oldest Nomad vimprof supports (ACL token expiry: v1.4)
WILDCARD_DC_VERSION = (1, 5)  # Datacenters = ["*"] (nomad/structs/structs.go, v1.5.0)


@dataclass(frozen=True)
class ClusterAccess:
    """Address and credentials of one Nomad cluster's HTTP API.

    `ca_cert`, `client_cert`, `client_key`: PEM file paths; `tls_server_name`: the name the
    server's certificate is checked against (e.g. server.global.nomad) when the address is an
    IP. Secrets stay in memory: __repr__ hides the token.
    """

    addr: str
    token: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_server_name: str | None = None

    def __repr__(self) -> str:
        return (f"ClusterAccess(addr={self.addr!r}, token={'<set>' if self.token else None}, "
                f"ca_cert={self.ca_cert!r}, tls_server_name={self.tls_server_name!r})")

    @classmethod
    def from_env(cls, addr: str, token: str | None = None, ca_cert: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None,
                 tls_server_name: str | None = None) -> ClusterAccess:
        """Flags first, then the Nomad CLI's environment variables. Raises VimprofError for a
        certificate file that does not exist or a client certificate without its key."""
        env = os.environ.get
        access = cls(
            addr=addr.rstrip("/"),
            token=token or env("NOMAD_TOKEN") or None,
            ca_cert=ca_cert or env("NOMAD_CACERT") or None,
            client_cert=client_cert or env("NOMAD_CLIENT_CERT") or None,
            client_key=client_key or env("NOMAD_CLIENT_KEY") or None,
            tls_server_name=tls_server_name or env("NOMAD_TLS_SERVER_NAME") or None,
        )
        for what, path in (("CA certificate (NOMAD_CACERT)", access.ca_cert),
                           ("client certificate (NOMAD_CLIENT_CERT)", access.client_cert),
                           ("client key (NOMAD_CLIENT_KEY)", access.client_key)):
            if path and not os.path.isfile(path):
                raise VimprofError(f"the {what} {path} does not exist")
        if bool(access.client_cert) != bool(access.client_key):
            raise VimprofError("a client certificate needs its key and the other way round "
                               "(NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY)")
        if access.tls and not addr.startswith("https://"):
            raise VimprofError(f"TLS settings are given but the address {addr} is not https://")
        return access

    @property
    def tls(self) -> bool:
        return bool(self.ca_cert or self.client_cert or self.tls_server_name)

    def session(self) -> requests.Session:
        """A requests session with the CA, client certificate and server name applied."""
        s = _Session()
        if self.ca_cert:
            s.verify = self.ca_cert
        if self.client_cert and self.client_key:
            s.cert = (self.client_cert, self.client_key)
        if self.token:
            s.headers["X-Nomad-Token"] = self.token
        if self.tls_server_name:
            s.mount("https://", _ServerNameAdapter(self.tls_server_name))
        return s

    def python_nomad(self, timeout: int = 10) -> dict[str, Any]:
        """Keyword arguments of nomad.Nomad (python-nomad) for this cluster."""
        rest = self.addr.removeprefix("http://").removeprefix("https://")
        host, _, port = rest.partition(":")
        return {"host": host, "port": int(port or 4646), "secure": self.addr.startswith("https"),
                "token": self.token, "timeout": timeout, "session": self.session(),
                "verify": self.ca_cert or self.addr.startswith("https"),
                "cert": (self.client_cert, self.client_key) if self.client_cert else ()}


class _Session(requests.Session):
    """A session whose own `verify` and `cert` hold for every request: requests lets
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override a session's CA
    (Session.merge_environment_settings), which would check the cluster's certificate
    against the system CAs instead of NOMAD_CACERT."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.verify)
        if self.cert:
            kwargs.setdefault("cert", self.cert)
        return super().request(method, url, *args, **kwargs)


class _ServerNameAdapter(HTTPAdapter):
    """Checks the server certificate against a given name instead of the address's host (the
    Nomad CLI's -tls-server-name); the TLS SNI carries the same name."""

    def __init__(self, server_name: str):
        self.server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_hostname"] = self.server_name
        kwargs["server_hostname"] = self.server_name
        super().init_poolmanager(*args, **kwargs)


@dataclass(frozen=True)
class Preflight:
    """What the preflight learned: Nomad's version (None when the token may not read the
    agent), its datacenter, whether ACLs are on, the token's name and expiry (ns since the
    epoch, None: never)."""

    version: str | None
    datacenter: str | None
    acl: bool
    token_name: str | None
    token_expires_ns: int | None = None

    def version_tuple(self) -> tuple[int, ...] | None:
        return _version_tuple(self.version) if self.version else None


def check_version(version: str) -> None:
    """Raise VimprofError, naming what is missing, for a Nomad older than MIN_VERSION."""
    if _version_tuple(version) < MIN_VERSION:
        raise VimprofError(
            f"the cluster runs Nomad v{version}, older than v1.4, the oldest vimprof supports: "
            "its ACL tokens have no ExpirationTime (GET /v1/acl/token/self, v1.4), which "
            "vimprof checks against the campaign")


def _version_tuple(v: str) -> tuple[int, ...]:
    core = v.lstrip("v").split("-")[0].split("+")[0]
    return tuple(int(x) for x in core.split(".")[:3] if x.isdigit())


def reachable(access: ClusterAccess) -> Any:
    """Check that a Nomad agent answers at `access` (GET /v1/status/leader, which needs no
    ACL); returns call(method, path, **kw) -> Response for more requests. Raises VimprofError
    for an unreachable agent, a TLS failure (CA, server name, client certificate) or another
    service at the address."""
    s = access.session()

    def call(method: str, path: str, **kw: Any) -> requests.Response:
        try:
            return s.request(method, f"{access.addr}{path}", timeout=10, **kw)
        except requests.exceptions.SSLError as exc:
            raise VimprofError(_tls_reason(access, exc)) from None
        except requests.RequestException as exc:
            raise VimprofError(f"Nomad is unreachable at {access.addr} ({type(exc).__name__});"
                               " check --nomad-addr and that the agent listens there") from None

    leader = call("GET", "/v1/status/leader")
    if leader.status_code != 200:
        raise VimprofError(f"{access.addr} does not answer as a Nomad agent "
                           f"(GET /v1/status/leader: HTTP {leader.status_code})")
    return call


def preflight(access: ClusterAccess, job: dict[str, Any]) -> Preflight:
    """Check, before any request that changes the cluster, that vimprof can run `job` (an API
    job, JSON) there and clean up after it. Nothing is created: submit-job is probed with a
    plan (POST /v1/job/ID/plan, a dry run), read-job with a job that does not exist.

    Raises VimprofError with one line saying what is wrong and what to do.
    """
    call = reachable(access)
    acl, token_name, expires_ns = _token(call, access)
    version = datacenter = None
    agent = call("GET", "/v1/agent/self")
    if agent.status_code == 200:
        cfg = agent.json().get("config", {})
        version = cfg.get("Version", {}).get("Version")
        datacenter = cfg.get("Datacenter")
    if version:
        check_version(version)
    missing = []
    probe = f"vimprof-preflight-{secrets.token_hex(4)}"
    if call("GET", "/v1/jobs", params={"prefix": "vimprof-"}).status_code == 403:
        missing.append("list-jobs")
    if call("GET", f"/v1/job/{probe}").status_code == 403:
        missing.append("read-job")
    plan = call("POST", f"/v1/job/{probe}/plan",
                json={"Job": {**job, "ID": probe, "Name": probe}, "Diff": False})
    if plan.status_code == 403:
        missing.append("submit-job")
    elif plan.status_code >= 400:
        raise VimprofError(f"Nomad refuses the job: {_text(plan)}")
    if missing:
        who = f"token {token_name!r}" if token_name else "the token"
        raise VimprofError(
            f"{who} lacks the capabilit{'y' if len(missing) == 1 else 'ies'} "
            f"{', '.join(missing)} in namespace {job.get('Namespace') or 'default'}: give it a "
            "policy with namespace capabilities submit-job, read-job and list-jobs")
    return Preflight(version=version, datacenter=datacenter, acl=acl, token_name=token_name,
                     token_expires_ns=expires_ns)


def _token(call: Any, access: ClusterAccess) -> tuple[bool, str | None, int | None]:
    """(ACLs on, the token's name, its expiry in ns or None); VimprofError for a token the
    cluster does not know or that has expired."""
    r = call("GET", "/v1/acl/token/self")
    text = _text(r)
    if r.status_code == 200:
        body = r.json()
        expires = _rfc3339_ns(body.get("ExpirationTime"))
        if expires is not None and expires <= time.time_ns():
            raise VimprofError(f"the token expired at {body['ExpirationTime']}: get a new one")
        return True, body.get("Name") or None, expires
    if "ACL support disabled" in text:
        return False, None, None
    if not access.token:  # v1.6 answers 500 "missing secret id", others 403
        raise VimprofError("the cluster has ACLs on and no token was given: pass --token or set "
                           "NOMAD_TOKEN")
    if r.status_code in (403, 404) and ("not found" in text or "expired" in text.lower()):
        raise VimprofError("the cluster does not accept the token (wrong, deleted or expired): "
                           "check --token / NOMAD_TOKEN")
    if r.status_code == 403:
        raise VimprofError(f"the cluster refuses the token: {text}")
    raise VimprofError(f"GET /v1/acl/token/self: HTTP {r.status_code}: {text}")


def _rfc3339_ns(text: str | None) -> int | None:
    """ns since the epoch of a Go RFC 3339 time ("2026-12-04T18:00:00.123456789Z")."""
    if not text:
        return None
    from datetime import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    zone = ""
    for sign in ("+", "-"):
        if sign in frac:
            frac, zone = frac.split(sign, 1)[0], sign + frac.split(sign, 1)[1]
    if not frac and ("+" in head[10:] or head[10:].count("-")):
        cut = max(head.rfind("+"), head.rfind("-"))
        head, zone = head[:cut], head[cut:]
    dt = datetime.fromisoformat(head + (zone or "+00:00"))
    return int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def _tls_reason(access: ClusterAccess, exc: Exception) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        if "hostname" in text.lower() or "match" in text.lower():
            return (f"the server's certificate at {access.addr} is not for that name: set "
                    "NOMAD_TLS_SERVER_NAME (e.g. server.global.nomad)")
        return (f"the server's certificate at {access.addr} is not signed by the CA "
                f"{access.ca_cert or '(system CAs)'}: point NOMAD_CACERT at the cluster's CA")
    if "certificate required" in text.lower() or "alert" in text.lower():
        return (f"the server at {access.addr} asks for a client certificate: set "
                "NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY")
    return f"TLS with {access.addr} failed: {text[:200]}"


def _text(r: requests.Response) -> str:
    return (r.text or "").strip().splitlines()[0][:200] if r.text else f"HTTP {r.status_code}"
