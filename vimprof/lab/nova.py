"""The embedded OpenStack lab: a real single-node Nova (Debian 12's Zed packages) in a namespace.

    root namespace (pusher, vimprof)            hostn (the whole cloud)
    vp-nova 198.18.2.1/30  ------ veth ------  vp-nova 198.18.2.2/30
                                               MariaDB 127.0.0.1:3306, RabbitMQ :5672,
                                               Keystone :5000, Glance :9292, Placement :8778,
                                               Neutron :9696 (ML2, no agents), nova-api :8774,
                                               nova-conductor/-scheduler/-compute, libvirtd,
                                               virtlogd, QEMU guests

Everything is started by hand (no systemd, `invoke-rc.d` denied), as root, on Debian's
/usr/bin/python3, with configuration, databases, keys, images and logs under one lab directory
(vimprof.paths.lab_root()/nova). The catalog's endpoints are http://198.18.2.2:PORT: the pusher
reaches them over the veth, the services reach each other on hostn's loopback (the address is
local there), so a capture in hostn (interface "any") sees all OpenStack traffic and nothing else.
Addresses are from 198.18.0.0/15 (RFC 2544); hostn has no default route.

`up()` creates the databases, Keystone (fernet, uwsgi), the service users and endpoints (through
the Python API: the `openstack` CLI takes minutes), Glance, Placement, Neutron, Nova (cell0,
cell1, libvirt driver, virt_type qemu = TCG or kvm, measured by vimprof.lab.accel), uploads the
test micro-VNF kernel (aki), a 1 MiB raw root image with kernel_id (stock Nova's direct kernel
boot), a diskless image for vimprof's driver (property vimprof_diskless=true) and creates the
flavor (64 MB, 1 vCPU, disk 0). `down()` stops every process it started, destroys and undefines
the guests, deletes the namespace and the lab directory. Facts: shared/design/openstack-lab.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from vimprof import paths
from vimprof.errors import VimprofError
from vimprof.lab import netns
from vimprof.lab.proc import alive, tail

NS = "hostn"
IFACE = "vp-nova"
HOST_IP = "198.18.2.1"
CLOUD_IP = "198.18.2.2"
REGION = "RegionOne"
COMPUTE_HOST = "hostn"
PORTS = {"keystone": 5000, "glance": 9292, "placement": 8778, "neutron": 9696,
         "nova-api": 8774, "amqp": 5672}
CAPTURE_FILTER = " or ".join(f"tcp port {p}" for p in PORTS.values())
READY_TIMEOUT_S = 300.0
SYSTEM_PYTHON = "/usr/bin/python3"
FLAVOR_ID = "vimprof-micro"
KERNEL_IMAGE = "vimprof-testvnf-kernel"
STOCK_IMAGE = "vimprof-testvnf"
DISKLESS_IMAGE = "vimprof-testvnf-diskless"
DISKLESS_PROPERTY = "vimprof_diskless"
CLOUD_NAME = "vimprof-nova-lab"
# Driver kits nova-compute can run (LabState.driver_kit) -> Nova's compute_driver option.
# 'patched' is Nova's own driver with patches/nova applied to a copy of Debian's nova package.
DRIVERS = {"vimprof": "vimprof_diskless.DisklessLibvirtDriver",
           "libvirt": "libvirt.LibvirtDriver",
           "patched": "libvirt.LibvirtDriver"}
NOVA_PATCH = Path(__file__).resolve().parents[2] / "patches" / "nova" / \
    "0001-libvirt-diskless-kernel-only-guests-and-spawn-hooks.patch"  # in a source checkout
SYSTEM_NOVA = Path("/usr/lib/python3/dist-packages/nova")
# nova-compute logs this at the end of init_host (nova/compute/manager.py
# _error_out_instances_whose_build_was_interrupted), just before it consumes RPC.
COMPUTE_READY_LOG = "Looking for unclaimed instances stuck in BUILDING status"
PACKAGES = ("nova-api", "nova-conductor", "nova-scheduler", "nova-compute-qemu", "keystone",
            "glance", "placement-api", "neutron-server", "rabbitmq-server", "mariadb-server",
            "libvirt-daemon-system", "uwsgi-plugin-python3")
SERVICES = ("nova", "glance", "placement", "neutron")  # Keystone users (admin on "service")
DATABASES = ("keystone", "glance", "placement", "neutron", "nova_api", "nova", "nova_cell0")


@dataclass
class LabState:
    """What `lab up` started; persisted as lab.json (mode 0600: it holds the lab's passwords).

    pids: service name -> pid. auth_url is Keystone's public v3 endpoint; image_ids maps
    'kernel', 'stock', 'diskless' to Glance image ids; hooks_file is where vimprof's Nova driver
    appends its timestamp hooks (JSON lines); virt_type is Nova's libvirt virt_type.
    """

    lab_dir: str
    nova_version: str
    accelerator: str
    virt_type: str
    compute_driver: str
    auth_url: str
    password: str
    pids: dict[str, int] = field(default_factory=dict)
    image_ids: dict[str, str] = field(default_factory=dict)
    flavor_id: str = FLAVOR_ID
    hooks_file: str = ""
    capture_netns: str = NS
    capture_iface: str = "any"
    driver_kit: str = "vimprof"  # a DRIVERS key

    def cloud(self) -> dict[str, Any]:
        """openstack.connect() keyword arguments for the lab's admin (clouds.yaml shape)."""
        return {"auth_url": self.auth_url, "username": "admin", "password": self.password,
                "project_name": "admin", "user_domain_name": "Default",
                "project_domain_name": "Default", "region_name": REGION,
                "identity_api_version": "3", "interface": "public"}


def lab_dir() -> Path:
    return paths.lab_root() / "nova"


def packages_missing() -> list[str]:
    """Debian packages of the lab that are not installed (scripts/setup-openstack installs them)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *PACKAGES],
                         capture_output=True, text=True).stdout
    ok = {line.split()[0] for line in out.splitlines() if line.endswith("install ok installed")}
    return [p for p in PACKAGES if p not in ok]


# -- configuration files -----------------------------------------------------------------------

def _ini(sections: dict[str, dict[str, object]]) -> str:
    out = []
    for name, opts in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {v}" for k, v in opts.items())
        out.append("")
    return "\n".join(out)


def _db(pw: str, name: str) -> str:
    return f"mysql+pymysql://os:{pw}@127.0.0.1/{name}?charset=utf8"


def _authtoken(pw: str, user: str) -> dict[str, object]:
    return {"www_authenticate_uri": f"http://{CLOUD_IP}:5000/",
            "auth_url": f"http://{CLOUD_IP}:5000/", "auth_type": "password",
            "project_domain_name": "Default", "user_domain_name": "Default",
            "project_name": "service", "username": user, "password": pw,
            "region_name": REGION}


def _service_auth(pw: str, user: str) -> dict[str, object]:
    return {"auth_url": f"http://{CLOUD_IP}:5000/v3", "auth_type": "password",
            "project_domain_name": "Default", "user_domain_name": "Default",
            "project_name": "service", "username": user, "password": pw,
            "region_name": REGION}


def _configs(d: Path, pw: str, virt_type: str, compute_driver: str) -> dict[str, str]:
    """Config file name (relative to d/etc) -> content."""
    amqp = "rabbit://guest:guest@127.0.0.1:5672/"
    lock = {"lock_path": str(d / "lock")}
    keystone = _ini({
        "DEFAULT": {"log_file": "", "use_stderr": "true"},
        "database": {"connection": _db(pw, "keystone")},
        "token": {"provider": "fernet"},
        "fernet_tokens": {"key_repository": str(d / "keystone" / "fernet-keys")},
        "fernet_receipts": {"key_repository": str(d / "keystone" / "fernet-keys")},
        "credential": {"key_repository": str(d / "keystone" / "credential-keys")},
        "cache": {"enabled": "false"},
    })
    glance = _ini({
        "DEFAULT": {"bind_host": "0.0.0.0", "bind_port": PORTS["glance"], "workers": 1,
                    "enabled_backends": "fs:file", "use_stderr": "true"},
        "glance_store": {"default_backend": "fs"},
        "fs": {"filesystem_store_datadir": str(d / "glance" / "images")},
        "os_glance_staging_store": {"filesystem_store_datadir": str(d / "glance" / "staging")},
        "os_glance_tasks_store": {"filesystem_store_datadir": str(d / "glance" / "tasks")},
        "database": {"connection": _db(pw, "glance")},
        "keystone_authtoken": _authtoken(pw, "glance"),
        "paste_deploy": {"flavor": "keystone",
                         "config_file": "/etc/glance/glance-api-paste.ini"},
        "oslo_concurrency": lock,
    })
    placement = _ini({
        "DEFAULT": {"use_stderr": "true"},
        "api": {"auth_strategy": "keystone"},
        "placement_database": {"connection": _db(pw, "placement")},
        "keystone_authtoken": _authtoken(pw, "placement"),
    })
    neutron = _ini({
        # port_forwarding: its model defines Port.port_forwardings, which neutron's
        # get_ports uses (AttributeError without it)
        "DEFAULT": {"core_plugin": "ml2", "service_plugins": "router,port_forwarding",
                    "auth_strategy": "keystone",
                    "transport_url": amqp, "bind_host": "0.0.0.0",
                    "bind_port": PORTS["neutron"], "api_workers": 1, "rpc_workers": 0,
                    "rpc_state_report_workers": 0, "state_path": str(d / "neutron"),
                    "notify_nova_on_port_status_changes": "false",
                    "notify_nova_on_port_data_changes": "false", "use_stderr": "true",
                    "api_paste_config": "/etc/neutron/api-paste.ini"},
        "database": {"connection": _db(pw, "neutron")},
        "keystone_authtoken": _authtoken(pw, "neutron"),
        "oslo_concurrency": lock,
        "agent": {"root_helper": "sudo neutron-rootwrap /etc/neutron/rootwrap.conf"},
        "ml2": {"type_drivers": "flat", "tenant_network_types": "",
                "mechanism_drivers": "", "extension_drivers": "port_security"},
        "ml2_type_flat": {"flat_networks": "*"},
    })
    nova = _ini({
        "DEFAULT": {"transport_url": amqp, "my_ip": CLOUD_IP, "host": COMPUTE_HOST,
                    "state_path": str(d / "nova"), "instances_path": str(d / "nova" / "instances"),
                    "enabled_apis": "osapi_compute", "osapi_compute_workers": 1,
                    "use_stderr": "true", "compute_driver": compute_driver},
        "api": {"auth_strategy": "keystone"},
        "wsgi": {"api_paste_config": str(d / "etc" / "api-paste.ini")},
        "api_database": {"connection": _db(pw, "nova_api")},
        "database": {"connection": _db(pw, "nova")},
        "keystone_authtoken": _authtoken(pw, "nova"),
        "placement": _service_auth(pw, "placement"),
        "neutron": _service_auth(pw, "neutron"),
        "glance": {"api_servers": f"http://{CLOUD_IP}:{PORTS['glance']}"},
        "conductor": {"workers": 1},
        "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": -1},
        "libvirt": {"virt_type": virt_type, "cpu_mode": "none"},
        "vnc": {"enabled": "false"},
        "spice": {"enabled": "false"},
        "oslo_concurrency": lock,
        "os_vif_ovs": {"ovsdb_connection": "tcp:127.0.0.1:6640"},
    })
    return {"keystone/keystone.conf": keystone, "glance-api.conf": glance,
            "placement/placement.conf": placement, "neutron.conf": neutron,
            "nova.conf": nova}


def _compute_conf(state: LabState) -> str:
    """nova-compute.conf, read after nova.conf (as Debian's /etc/nova/nova-compute.conf): the
    driver kit's compute_driver, virt_type, and for 'patched' the patch's hooks file option."""
    libvirt = {"virt_type": state.virt_type}
    if state.driver_kit == "patched":
        libvirt["spawn_hooks_file"] = state.hooks_file  # [libvirt] option of patches/nova
    return _ini({"DEFAULT": {"compute_driver": DRIVERS[state.driver_kit]}, "libvirt": libvirt})


# -- processes ----------------------------------------------------------------------------------

def _spawn(name: str, cmd: list[str], logs: Path, env: dict[str, str] | None = None,
           user: str | None = None) -> int:
    """Start `cmd` in hostn, detached (own session), output to logs/<name>.log; its pid."""
    full = ["ip", "netns", "exec", NS, *cmd]
    if user:
        full = ["ip", "netns", "exec", NS, "setpriv", f"--reuid={user}", f"--regid={user}",
                "--init-groups", *cmd]
    with open(logs / f"{name}.log", "ab") as fh:
        # cwd: the logs directory, where an Erlang crash dump or a core lands (not the caller's)
        proc = subprocess.Popen(full, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})}, cwd=logs)
    return proc.pid


def _run(cmd: list[str], logs: Path, name: str, timeout: float = 300,
         env: dict[str, str] | None = None, in_ns: bool = True) -> str:
    """Run `cmd` (in hostn) to completion; its stdout. Raises VimprofError on failure."""
    full = ["ip", "netns", "exec", NS, *cmd] if in_ns else cmd
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    with open(logs / f"{name}.log", "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
        raise VimprofError(f"`{' '.join(cmd[:4])} ...` failed (rc {proc.returncode}); "
                           f"see {logs / (name + '.log')}:\n{tail}")
    return proc.stdout


def _parallel(jobs: dict[str, list[list[str]]], logs: Path, timeout: float = 600) -> None:
    """Run several sequences of commands (in hostn) concurrently; raise on the first failure."""
    import concurrent.futures as cf

    def seq(name: str, cmds: list[list[str]]) -> None:
        for cmd in cmds:
            _run(cmd, logs, name, timeout=timeout)

    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        futs = [pool.submit(seq, n, c) for n, c in jobs.items()]
        for f in futs:
            f.result()


def _tcp_ready(port: int, path: str | None = None) -> bool:
    """True when CLOUD_IP:port answers (an HTTP GET of `path` with any status < 500)."""
    if path is None:
        import socket

        with contextlib.suppress(OSError), socket.create_connection((CLOUD_IP, port), 1):
            return True
        return False
    try:
        r = requests.get(f"http://{CLOUD_IP}:{port}{path}", timeout=3)
    except requests.RequestException:
        return False
    return r.status_code < 500


def _wait(what: str, ready, state: LabState, logs: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        for name, pid in state.pids.items():
            if not alive(pid):
                raise VimprofError(f"{name} exited while the lab was starting; see "
                                   f"{logs / (name + '.log')}:\n{tail(logs / (name + '.log'), 12)}")
        if ready():
            return
        time.sleep(0.2)
    raise VimprofError(f"the Nova lab did not become ready (waiting for: {what}) within "
                       f"{READY_TIMEOUT_S:.0f} s; see the logs in {logs}")


def _save(state: LabState) -> None:
    p = Path(state.lab_dir) / "lab.json"
    p.touch(mode=0o600, exist_ok=True)
    p.write_text(json.dumps(asdict(state), indent=2) + "\n")


def _load_state() -> LabState | None:
    p = lab_dir() / "lab.json"
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
        if "driver_kit" not in data:  # a state file of an older vimprof
            data["driver_kit"] = next((k for k, v in DRIVERS.items()
                                       if v == data.get("compute_driver")), "vimprof")
        return LabState(**data)
    except (ValueError, TypeError):
        return None


def _uwsgi(name: str, wsgi_file: str, port: int, logs: Path, env: dict[str, str],
           processes: int = 1, threads: int = 1) -> int:
    return _spawn(name, ["uwsgi", "--plugin", "python3", "--http-socket", f"0.0.0.0:{port}",
                         "--wsgi-file", wsgi_file, "--master", "--processes", str(processes),
                         "--threads", str(threads), "--enable-threads", "--lazy-apps",
                         "--die-on-term", "--buffer-size", "65535", "--need-app",
                         # http-socket closes after each response: say so, or clients reuse
                         # the dead connection and get a reset
                         "--add-header", "Connection: close",
                         "--procname-prefix", "vimprof-"], logs, env=env)


# -- bring-up ---------------------------------------------------------------------------------

def up(accelerator: str = "auto", compute_driver: str = "vimprof") -> LabState:
    """Bring the lab up (idempotent: a running lab is returned as is).

    accelerator: 'tcg', 'kvm' or 'auto' (measured by vimprof.lab.accel; Nova's virt_type is
    qemu for TCG, kvm for KVM). compute_driver: 'vimprof' (vimprof's diskless LibvirtDriver
    subclass, which boots stock images exactly as Nova does and images with the
    vimprof_diskless property without a disk), 'libvirt' (Nova's own LibvirtDriver) or
    'patched' (Nova's own driver from a copy of the nova package with patches/nova applied:
    the in-tree form of the same diskless boot and hooks). A running lab with another kit
    only restarts nova-compute.
    Raises VimprofError when not root, packages are missing (run scripts/setup-openstack), or
    a service fails or is not ready in READY_TIMEOUT_S (the lab is then torn down).
    """
    netns.require_root()
    if compute_driver not in DRIVERS:
        raise VimprofError(f"unknown compute driver {compute_driver!r}: use one of "
                           f"{', '.join(DRIVERS)}")
    missing = packages_missing()
    if missing:
        raise VimprofError(f"OpenStack packages missing ({' '.join(missing)}): run "
                           "scripts/setup-openstack (about 12 min the first time)")
    state = current()
    if state is not None:
        if state.driver_kit == compute_driver:
            return state
        return _switch_compute(state, compute_driver)
    elif _load_state() is not None or netns.exists(NS):
        down()

    kernel = paths.testvnf_kernel()
    if accelerator == "auto":
        from vimprof.lab.accel import choose_accelerator

        accelerator = choose_accelerator(kernel).accel
    virt_type = "kvm" if accelerator == "kvm" else "qemu"

    d = lab_dir()
    if d.exists():
        shutil.rmtree(d)
    logs = d / "logs"
    for sub in ("logs", "etc/keystone", "etc/placement", "lock", "mysql", "rabbitmq",
                "keystone/fernet-keys", "keystone/credential-keys", "glance/images",
                "glance/staging", "glance/tasks", "neutron", "nova/instances", "images"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    # QEMU runs as libvirt-qemu and must reach the instance files.
    for p in (paths.lab_root(), d, d / "nova", d / "nova" / "instances"):
        p.chmod(0o755)
    pw = secrets.token_hex(12)
    state = LabState(lab_dir=str(d), nova_version=_nova_version(), accelerator=accelerator,
                     virt_type=virt_type, compute_driver=DRIVERS[compute_driver],
                     driver_kit=compute_driver,
                     auth_url=f"http://{CLOUD_IP}:5000/v3", password=pw,
                     hooks_file=str(d / "hooks.jsonl"))
    _save(state)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        netns.create(NS)
        netns.veth(None, IFACE, f"{HOST_IP}/30", NS, IFACE, f"{CLOUD_IP}/30")
        for name, text in _configs(d, pw, virt_type, state.compute_driver).items():
            (d / "etc" / name).write_text(text)
        shutil.copy2("/etc/nova/api-paste.ini", d / "etc" / "api-paste.ini")
        Path(state.hooks_file).touch()
        os.chmod(state.hooks_file, 0o666)
        _step(logs, "infra")
        _start_infra(state, d, logs, deadline)
        _step(logs, "openstack")
        _start_openstack(state, d, logs, deadline)
        _step(logs, "populate")
        _populate(state, d, logs)
    except BaseException as exc:
        kept = paths.lab_root() / "nova-failed-logs"
        shutil.rmtree(kept, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(logs, kept)
        down()
        if isinstance(exc, VimprofError):
            raise VimprofError(f"{exc}\n(the lab is down; its logs are kept in {kept})") from None
        raise
    _step(logs, "ready")
    shutil.rmtree(paths.lab_root() / "nova-failed-logs", ignore_errors=True)  # stale
    return state


def _step(logs: Path, what: str) -> None:
    """A timestamped line in logs/up.log (where bring-up time goes)."""
    with open(logs / "up.log", "a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} {what}\n")


def _start_infra(state: LabState, d: Path, logs: Path, deadline: float) -> None:
    """MariaDB (private datadir), RabbitMQ (private mnesia), virtlogd, libvirtd."""
    mysql = d / "mysql"
    shutil.chown(mysql, "mysql", "mysql")
    _run(["mariadb-install-db", "--no-defaults", f"--datadir={mysql / 'data'}", "--user=mysql",
          "--auth-root-authentication-method=socket", "--skip-test-db"], logs, "mysql-init",
         in_ns=False)
    sock = mysql / "mysqld.sock"
    state.pids["mysqld"] = _spawn("mysqld", [
        "mariadbd", "--no-defaults", f"--datadir={mysql / 'data'}", "--user=mysql",
        f"--socket={sock}", "--bind-address=127.0.0.1", "--port=3306",
        f"--pid-file={mysql / 'mysqld.pid'}", "--skip-name-resolve", "--max-connections=1000",
        "--innodb-buffer-pool-size=128M", "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_general_ci"], logs)
    rmq = d / "rabbitmq"
    rmq_env = {"HOME": str(rmq), "RABBITMQ_MNESIA_BASE": str(rmq / "mnesia"),
               "RABBITMQ_LOG_BASE": str(rmq / "log"), "RABBITMQ_NODENAME": "rabbit@localhost",
               "RABBITMQ_PID_FILE": str(rmq / "rabbit.pid"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(rmq / "enabled_plugins"),
               "RABBITMQ_CONFIG_FILE": str(rmq / "rabbitmq"),
               "RABBITMQ_CONF_ENV_FILE": str(rmq / "rabbitmq-env.conf")}
    (rmq / "enabled_plugins").write_text("[].\n")
    (rmq / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
    (rmq / "rabbitmq-env.conf").write_text("")
    state.pids["rabbitmq"] = _spawn("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], logs,
                                    env=rmq_env)
    state.pids["virtlogd"] = _spawn("virtlogd", ["virtlogd"], logs)
    state.pids["libvirtd"] = _spawn("libvirtd", ["libvirtd", "-p", str(d / "libvirtd.pid")],
                                    logs)
    _save(state)
    _wait("MariaDB", lambda: sock.exists(), state, logs, deadline)
    grants = [f"CREATE DATABASE IF NOT EXISTS {db};" for db in DATABASES]
    grants += [f"CREATE USER IF NOT EXISTS 'os'@'{h}' IDENTIFIED BY '{state.password}';"
               f"GRANT ALL PRIVILEGES ON *.* TO 'os'@'{h}';" for h in ("127.0.0.1", "localhost")]
    for _ in range(50):
        proc = subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e", " ".join(grants)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise VimprofError(f"MariaDB refused the lab's grants: {proc.stderr.strip()}")
    _wait("RabbitMQ on 5672", lambda: _tcp_ready(PORTS["amqp"]), state, logs, deadline)


def _start_openstack(state: LabState, d: Path, logs: Path, deadline: float) -> None:
    etc = d / "etc"
    nova_conf = ["--config-file", str(etc / "nova.conf")]
    kconf = ["--config-file", str(etc / "keystone" / "keystone.conf")]
    neutron_conf = ["--config-file", str(etc / "neutron.conf")]
    public = f"http://{CLOUD_IP}:5000/v3/"
    _parallel({
        "keystone-manage": [
            ["keystone-manage", *kconf, "db_sync"],
            ["keystone-manage", *kconf, "fernet_setup", "--keystone-user", "root",
             "--keystone-group", "root"],
            ["keystone-manage", *kconf, "credential_setup", "--keystone-user", "root",
             "--keystone-group", "root"],
            ["keystone-manage", *kconf, "bootstrap", "--bootstrap-password", state.password,
             "--bootstrap-admin-url", public, "--bootstrap-internal-url", public,
             "--bootstrap-public-url", public, "--bootstrap-region-id", REGION],
        ],
        "glance-manage": [["glance-manage", "--config-file", str(etc / "glance-api.conf"),
                           "db_sync"]],
        "placement-manage": [["placement-manage", "--config-file",
                              str(etc / "placement" / "placement.conf"), "db", "sync"]],
        "nova-manage": [
            ["nova-manage", *nova_conf, "api_db", "sync"],
            ["nova-manage", *nova_conf, "cell_v2", "map_cell0"],
            ["nova-manage", *nova_conf, "cell_v2", "create_cell", "--name", "cell1"],
            ["nova-manage", *nova_conf, "db", "sync"],
        ],
        "neutron-db-manage": [["neutron-db-manage", *neutron_conf, "upgrade", "heads"]],
    }, logs)
    _step(logs, "databases synced")
    state.pids["keystone"] = _uwsgi(
        "keystone", "/usr/bin/keystone-wsgi-public", PORTS["keystone"], logs,
        {"OS_KEYSTONE_CONFIG_DIR": str(etc / "keystone")}, threads=4)
    _save(state)
    _wait("keystone HTTP API", lambda: _tcp_ready(PORTS["keystone"], "/v3"), state, logs,
          deadline)
    _identity(state)
    _step(logs, "identity done")
    state.pids["glance-api"] = _spawn(
        "glance-api", ["glance-api", "--config-file", str(etc / "glance-api.conf")], logs)
    state.pids["placement"] = _uwsgi(
        "placement", "/usr/bin/placement-api", PORTS["placement"], logs,
        {"OS_PLACEMENT_CONFIG_DIR": str(etc / "placement")}, processes=2)
    state.pids["neutron-server"] = _spawn("neutron-server", ["neutron-server", *neutron_conf],
                                          logs)
    state.pids["nova-api"] = _uwsgi(
        "nova-api", "/usr/bin/nova-api-wsgi", PORTS["nova-api"], logs,
        {"OS_NOVA_CONFIG_DIR": str(etc), "OS_NOVA_CONFIG_FILES": "api-paste.ini;nova.conf"})
    state.pids["nova-conductor"] = _spawn("nova-conductor", ["nova-conductor", *nova_conf], logs)
    state.pids["nova-scheduler"] = _spawn("nova-scheduler", ["nova-scheduler", *nova_conf], logs)
    _start_compute(state, d, logs)
    for name, path in (("glance", "/versions"), ("placement", "/"),
                       ("neutron", "/"), ("nova-api", "/")):
        _wait(f"{name} HTTP API", lambda p=PORTS[name], q=path: _tcp_ready(p, q), state, logs,
              deadline)


def _connect(state: LabState):
    import openstack

    return openstack.connect(**state.cloud(), compute_api_version="2.52")


def _identity(state: LabState) -> None:
    """The service project, the services' users (admin there), services and endpoints."""
    conn = _connect(state)
    ident = conn.identity
    service = ident.find_project("service", domain_id="default") or \
        ident.create_project(name="service", domain_id="default")
    admin_role = ident.find_role("admin")
    base = f"http://{CLOUD_IP}"
    catalog = {"nova": ("compute", f"{base}:8774/v2.1"), "glance": ("image", f"{base}:9292"),
               "placement": ("placement", f"{base}:8778"),
               "neutron": ("network", f"{base}:9696")}
    for user in SERVICES:
        u = ident.find_user(user, domain_id="default") or ident.create_user(
            name=user, password=state.password, domain_id="default")
        ident.assign_project_role_to_user(service, u, admin_role)
        stype, url = catalog[user]
        svc = ident.find_service(user) or ident.create_service(name=user, type=stype)
        if not list(ident.endpoints(service_id=svc.id)):
            for iface in ("public", "internal", "admin"):
                ident.create_endpoint(service_id=svc.id, interface=iface, url=url,
                                      region_id=REGION)
    conn.close()


def _populate(state: LabState, d: Path, logs: Path) -> None:
    """The compute host in cell1, images and the flavor."""
    conn = _connect(state)
    deadline = time.monotonic() + READY_TIMEOUT_S
    _wait("nova-compute registered", lambda: _compute_up(conn), state, logs, deadline)
    _run(["nova-manage", "--config-file", str(d / "etc" / "nova.conf"), "cell_v2",
          "discover_hosts"], logs, "nova-manage")
    _wait("hypervisor in placement", lambda: _hypervisor_up(conn), state, logs, deadline)
    # neutron-server configures its SQLAlchemy mappers on the first query; until then
    # GET /v2.0/ports (which Nova sends on every GET /servers/{id}) fails with
    # "type object 'Port' has no attribute 'port_forwardings'". A real cloud has long had its
    # first query; list networks once so the API worker has too.
    _wait("neutron answering port queries", lambda: _neutron_ports_ok(conn), state, logs,
          deadline)
    state.image_ids = _images(conn, d)
    _flavor(conn)
    _save(state)
    conn.close()


def _compute_up(conn) -> bool:
    r = conn.compute.get("/os-services?binary=nova-compute", raise_exc=False)
    return r.status_code == 200 and any(s["state"] == "up" for s in r.json()["services"])


def _neutron_ports_ok(conn) -> bool:
    conn.network.get("/networks", raise_exc=False)
    return conn.network.get("/ports?device_id=none", raise_exc=False).status_code == 200


def _hypervisor_up(conn) -> bool:
    r = conn.compute.get("/os-hypervisors", raise_exc=False)
    if r.status_code != 200 or not r.json().get("hypervisors"):
        return False
    rp = conn.placement.get("/resource_providers", raise_exc=False)
    return rp.status_code == 200 and bool(rp.json().get("resource_providers"))


def _upload(conn, name: str, data: bytes, disk_format: str, container_format: str,
            **props: str) -> str:
    body = {"name": name, "disk_format": disk_format, "container_format": container_format,
            "visibility": "public", **props}
    r = conn.image.post("/images", json=body, raise_exc=True)
    image_id = r.json()["id"]
    conn.image.put(f"/images/{image_id}/file", data=data, raise_exc=True,
                   headers={"Content-Type": "application/octet-stream"})
    return image_id


def _images(conn, d: Path) -> dict[str, str]:
    kernel = paths.testvnf_kernel().read_bytes()
    kid = _upload(conn, KERNEL_IMAGE, kernel, "aki", "aki")
    stock = _upload(conn, STOCK_IMAGE, b"\0" * (1 << 20), "raw", "bare", kernel_id=kid)
    # Never read by vimprof's diskless driver: a one-sector placeholder for Glance.
    diskless = _upload(conn, DISKLESS_IMAGE, b"\0" * 512, "raw", "bare", kernel_id=kid,
                       # vimprof's drop-in driver / the in-tree patch (patches/nova)
                       **{DISKLESS_PROPERTY: "true", "img_diskless": "true"})
    return {"kernel": kid, "stock": stock, "diskless": diskless}


def _flavor(conn) -> None:
    body = {"flavor": {"name": FLAVOR_ID, "id": FLAVOR_ID, "ram": 64, "vcpus": 1, "disk": 0}}
    r = conn.compute.post("/flavors", json=body, raise_exc=False)
    if r.status_code not in (200, 409):
        raise VimprofError(f"creating flavor {FLAVOR_ID} failed: HTTP {r.status_code} {r.text}")


def _nova_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-nova"],
                         capture_output=True, text=True).stdout
    return out.strip() or "unknown"


# -- tear-down --------------------------------------------------------------------------------

def _start_compute(state: LabState, d: Path, logs: Path) -> int:
    """Start nova-compute with the state's driver kit: 'vimprof' installs vimprof's drop-in
    driver where Debian's python3 finds it; 'patched' runs Nova from a patched copy of the
    nova package (first on PYTHONPATH). Returns the pid."""
    etc = d / "etc"
    (etc / "nova-compute.conf").write_text(_compute_conf(state))
    env = {"VIMPROF_NOVA_HOOKS": state.hooks_file}
    if state.driver_kit == "vimprof":
        from vimprof.drivers.nova import install

        install.install()
    elif state.driver_kit == "patched":
        env["PYTHONPATH"] = str(_patched_nova(d, logs))
    pid = _spawn("nova-compute", ["nova-compute", "--config-file", str(etc / "nova.conf"),
                                  "--config-file", str(etc / "nova-compute.conf")], logs, env=env)
    state.pids["nova-compute"] = pid
    _save(state)
    return pid


def _patched_nova(d: Path, logs: Path) -> Path:
    """A copy of Debian's nova package with patches/nova applied; the directory holding it.

    Raises VimprofError when the patch is not in this checkout or does not apply."""
    if not NOVA_PATCH.exists():
        raise VimprofError(f"{NOVA_PATCH} not found: the 'patched' driver kit runs from a "
                           "vimprof source checkout")
    root = d / "nova-patched"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(SYSTEM_NOVA, root / "nova", symlinks=True)
    _run(["patch", "-p1", "--forward", "--batch", "-d", str(root), "-i", str(NOVA_PATCH)],
         logs, "nova-patch", in_ns=False)
    return root


def _switch_compute(state: LabState, kit: str) -> LabState:
    """Restart only nova-compute with another driver kit (the rest of the lab keeps running);
    returns when it is about to consume RPC (COMPUTE_READY_LOG from the new process)."""
    d, logs = Path(state.lab_dir), Path(state.lab_dir) / "logs"
    old = state.pids.get("nova-compute")
    if old:
        _stop(old)
    state.driver_kit, state.compute_driver = kit, DRIVERS[kit]
    log = logs / "nova-compute.log"
    offset = log.stat().st_size if log.exists() else 0
    pid = _start_compute(state, d, logs)
    deadline = time.monotonic() + READY_TIMEOUT_S

    def ready() -> bool:
        with open(log, "rb") as fh:
            fh.seek(offset)
            return any(f" {pid} ".encode() in line and COMPUTE_READY_LOG.encode() in line
                       for line in fh)

    _wait(f"nova-compute ({kit}) restarted", ready, state, logs, deadline)
    return state


STOP_ORDER = ("nova-compute", "nova-api", "nova-scheduler", "nova-conductor", "neutron-server",
              "placement", "glance-api", "keystone", "libvirtd", "virtlogd", "rabbitmq", "mysqld")


def _stop(pid: int, grace_s: float = 10.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not alive(pid):
                return
            time.sleep(0.05)


def _guests() -> list[str]:
    """Libvirt domains Nova created (instance-XXXXXXXX), running or defined."""
    proc = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                          capture_output=True, text=True, timeout=20)
    return [n for n in proc.stdout.split() if n.startswith("instance-")] \
        if proc.returncode == 0 else []


def down() -> list[str]:
    """Stop the lab: guests (destroyed, undefined), services, the namespace, the lab directory.

    Idempotent. Returns what was cleaned up, for the CLI to show.
    """
    netns.require_root()
    done: list[str] = []
    state = _load_state()
    pids = state.pids if state else {}
    if pids.get("libvirtd") and alive(pids["libvirtd"]):
        for dom in _guests():
            for verb in ("destroy", "undefine"):
                subprocess.run(["virsh", "-c", "qemu:///system", verb, dom],
                               capture_output=True, timeout=30)
            done.append(f"destroyed guest {dom}")
    for name in STOP_ORDER:
        pid = pids.get(name)
        if pid and alive(pid):
            _stop(pid)
            done.append(f"stopped {name} (pid {pid})")
    left = netns.kill_all(NS)
    if left:
        done.append(f"killed {len(left)} process(es) left in {NS}")
    if netns.exists(NS):
        netns.delete(NS)
        done.append(f"deleted namespace {NS}")
    if netns.ip("link", "show", IFACE, check=False).returncode == 0:
        netns.ip("link", "del", IFACE, check=False)
    # Domains libvirt persisted while it ran (it is gone now): Nova's, by name.
    for xml in Path("/etc/libvirt/qemu").glob("instance-*.xml"):
        xml.unlink()
        done.append(f"removed stale domain definition {xml.name}")
    for p in Path("/run/libvirt/qemu").glob("instance-*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    d = lab_dir()
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
        done.append(f"removed {d}")
    return done


# -- inspection ---------------------------------------------------------------------------------

def current() -> LabState | None:
    """The running lab's state, or None when it is not up (every service process alive)."""
    state = _load_state()
    if state and state.image_ids and state.pids and all(alive(p) for p in state.pids.values()):
        return state
    return None


def status() -> dict[str, object]:
    """A snapshot: namespace, service processes, Nova services, guests."""
    state = _load_state()
    info: dict[str, object] = {"lab_dir": str(lab_dir()), "namespace": netns.exists(NS),
                               "running": False}
    missing = packages_missing()
    if missing:
        info["packages_missing"] = " ".join(missing)
    if not state:
        return info
    info.update(nova_version=state.nova_version, accelerator=state.accelerator,
                virt_type=state.virt_type, compute_driver=state.compute_driver,
                driver_kit=state.driver_kit, auth_url=state.auth_url,
                processes={n: alive(p) for n, p in state.pids.items()})
    try:
        conn = _connect(state)
        r = conn.compute.get("/os-services", raise_exc=False)
        info["nova_services"] = {f"{s['binary']}@{s['host']}": s["state"]
                                 for s in r.json().get("services", [])}
        info["running"] = current() is not None
        conn.close()
    except Exception as exc:  # noqa: BLE001 - status reports, never fails
        info["error"] = f"{type(exc).__name__}: {exc}"[:300]
    info["guests"] = len(guest_pids())
    return info


def guest_pids() -> list[int]:
    """PIDs of QEMU guests running in hostn."""
    found = []
    for pid in netns.pids(NS):
        with contextlib.suppress(OSError):
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("qemu-system"):
                found.append(pid)
    return found
