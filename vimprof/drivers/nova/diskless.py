"""A LibvirtDriver that boots ClickOS-style micro-VNFs with no disk at all, with timestamp hooks.

Runs inside nova-compute (Debian's /usr/bin/python3, Nova 26.2.2 Zed). Installed by
vimprof.drivers.nova.install as the package `vimprof_nova_driver` plus the shim
nova/virt/vimprof_diskless.py, and selected with

    [DEFAULT] compute_driver = vimprof_diskless.DisklessLibvirtDriver

Two variants, chosen per image:

* stock (any image without the property below): Nova's own LibvirtDriver.spawn, unchanged;
  the subclass only times its steps (create_image, generate_xml, libvirt_spawn, wait_boot and
  the whole spawn).
* tuned (image property ``vimprof_diskless=true``): the kernel comes from Glance through the
  image's ``kernel_id`` (cached in _base and copied, as Nova does), and everything a diskless
  unikernel does not need is skipped: the root image fetch and its resize/overlay, ephemeral and
  swap disks, file/key/password injection, the config drive, vGPU/vTPM preparation and the
  image-property registration; a kernel already in _base is copied without the raw image
  backend's `qemu-img info`; the guest XML has no <disk>, no memory balloon
  (<memballoon model="none"/>) and no virtio RNG; RUNNING is polled every
  VIMPROF_NOVA_POLL_S seconds (default 0.01) instead of Nova's fixed 0.5 s; a guest without
  ports is defined and started directly (no VIF plugging, no network-vif-plugged wait), and
  libvirt's Started/Resumed events of that fresh guest are not passed on (emit_event).

Hook lines (vimprof.drivers.nova.hooks) go to $VIMPROF_NOVA_HOOKS. Source of the overridden
methods: nova/virt/libvirt/driver.py (spawn, _create_image, _get_guest_xml,
_create_guest_with_network, _get_guest_storage_config, _set_guest_for_inst_kernel).
"""

from __future__ import annotations

import os
import shutil
import time

from nova import exception
from nova.compute import power_state
from nova.virt import event as virtevent
from nova.virt.libvirt import blockinfo, imagecache
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging
from oslo_utils import excutils, fileutils, strutils

try:  # installed: vimprof_nova_driver.hooks; in the source tree: vimprof.drivers.nova.hooks
    from . import hooks
except ImportError:  # pragma: no cover - loaded as a top-level module
    import hooks  # type: ignore[no-redef]

LOG = logging.getLogger(__name__)

DISKLESS_PROPERTY = "vimprof_diskless"
POLL_ENV = "VIMPROF_NOVA_POLL_S"
DEFAULT_POLL_S = 0.01
BOOT_TIMEOUT_S = 60.0
# How long after a tuned launch libvirt's Started/Resumed events of that guest are dropped.
LAUNCH_EVENTS_S = 5.0
CONSOLE = "console=ttyS0"


def is_diskless(system_metadata) -> bool:
    """True when the instance's image asks for a diskless boot (vimprof_diskless truthy).

    `system_metadata` is the instance's system metadata (a dict): Nova copies the image's
    properties there as ``image_<name>`` when it creates the instance
    (nova/utils.py get_system_metadata_from_image), so no Glance request is needed.
    """
    value = (system_metadata or {}).get(f"image_{DISKLESS_PROPERTY}")
    return strutils.bool_from_string(value) if value is not None else False


def poll_interval_s() -> float:
    try:
        return max(0.001, float(os.environ.get(POLL_ENV, DEFAULT_POLL_S)))
    except ValueError:
        return DEFAULT_POLL_S


class DisklessLibvirtDriver(libvirt_driver.LibvirtDriver):
    """LibvirtDriver plus hooks (all images) and a diskless tuned spawn (flagged images)."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._vimprof_spawning: dict[str, str] = {}  # instance uuid -> variant
        self._vimprof_diskless: set[str] = set()
        self._vimprof_launched: dict[str, float] = {}  # uuid -> monotonic end of LAUNCH_EVENTS_S

    # -- which variant ------------------------------------------------------------------------

    def _variant_of(self, instance) -> str:
        """'tuned' when the instance's image carries vimprof_diskless=true, else 'stock'."""
        return "tuned" if is_diskless(instance.system_metadata) else "stock"

    # -- spawn --------------------------------------------------------------------------------

    def spawn(self, context, instance, image_meta, injected_files, admin_password, allocations,
              network_info=None, block_device_info=None, power_on=True, accel_info=None):
        t0 = time.time_ns()
        variant = self._variant_of(instance)
        uuid = instance.uuid
        self._vimprof_spawning[uuid] = variant
        try:
            if variant == "tuned":
                self._vimprof_diskless.add(uuid)
                self._spawn_diskless(context, instance, image_meta, network_info,
                                     block_device_info, power_on, accel_info)
            else:
                super().spawn(context, instance, image_meta, injected_files, admin_password,
                              allocations, network_info=network_info,
                              block_device_info=block_device_info, power_on=power_on,
                              accel_info=accel_info)
                self._hook_end("wait_boot", uuid, variant)
            hooks.record("spawn", uuid, variant, t0, time.time_ns())
        finally:
            self._vimprof_spawning.pop(uuid, None)
            self._vimprof_diskless.discard(uuid)
            self._vimprof_marks.pop(uuid, None)

    # Stock spawn: the steps of LibvirtDriver.spawn, timed through the methods it calls.

    @property
    def _vimprof_marks(self) -> dict[str, int]:
        marks = self.__dict__.setdefault("_vimprof_marks_d", {})
        return marks

    def _hook_end(self, hook: str, uuid: str, variant: str) -> None:
        start = self._vimprof_marks.get(uuid)
        if start is not None:
            hooks.record(hook, uuid, variant, start, time.time_ns())

    def _create_image(self, context, instance, disk_mapping, *args, **kwargs):
        variant = self._vimprof_spawning.get(instance.uuid)
        if variant is None or instance.uuid in self._vimprof_diskless:
            return super()._create_image(context, instance, disk_mapping, *args, **kwargs)
        with hooks.span("create_image", instance.uuid, variant):
            return super()._create_image(context, instance, disk_mapping, *args, **kwargs)

    def _get_guest_xml(self, context, instance, *args, **kwargs):
        variant = self._vimprof_spawning.get(instance.uuid)
        if variant is None:
            return super()._get_guest_xml(context, instance, *args, **kwargs)
        with hooks.span("generate_xml", instance.uuid, variant):
            return super()._get_guest_xml(context, instance, *args, **kwargs)

    def _create_guest_with_network(self, context, xml, instance, *args, **kwargs):
        variant = self._vimprof_spawning.get(instance.uuid)
        if variant is None:
            return super()._create_guest_with_network(context, xml, instance, *args, **kwargs)
        with hooks.span("libvirt_spawn", instance.uuid, variant):
            guest = super()._create_guest_with_network(context, xml, instance, *args,
                                                       **kwargs)
        self._vimprof_marks[instance.uuid] = time.time_ns()  # wait_boot starts here
        return guest

    # Tuned spawn: only what a diskless kernel-only guest needs.

    def _spawn_diskless(self, context, instance, image_meta, network_info, block_device_info,
                        power_on, accel_info):
        uuid = instance.uuid
        if not instance.kernel_id:
            # ImageUnacceptable aborts the build (no reschedule): ERROR with this fault
            raise exception.ImageUnacceptable(
                image_id=instance.image_ref,
                reason="a vimprof_diskless image needs a kernel_id property")
        disk_info = blockinfo.get_disk_info(libvirt_driver.CONF.libvirt.virt_type, instance,
                                            image_meta, block_device_info)
        disk_info["mapping"] = {}  # no disk at all: no root, ephemeral, swap or config drive
        with hooks.span("create_image", uuid, "tuned"):
            created_dir = self._create_kernel_only(context, instance)
            self._ensure_console_log_for_instance(instance)
        xml = self._get_guest_xml(context, instance, network_info, disk_info, image_meta,
                                  block_device_info=block_device_info, mdevs=[],
                                  accel_info=accel_info)
        with hooks.span("libvirt_spawn", uuid, "tuned"):
            self._create_guest_with_network_plain(context, xml, instance, network_info,
                                                  block_device_info, power_on, created_dir)
        with hooks.span("wait_boot", uuid, "tuned"):
            if power_on:
                self._wait_running(instance)
        LOG.info("Instance spawned diskless (vimprof tuned).", instance=instance)

    def _create_guest_with_network_plain(self, context, xml, instance, network_info,
                                         block_device_info, power_on, created_dir):
        if network_info:
            # VIFs to plug and network-vif-plugged events to wait for: the parent's method,
            # without the hook wrapper above and without a config drive callback.
            return libvirt_driver.LibvirtDriver._create_guest_with_network(
                self, context, xml, instance, network_info, block_device_info,
                post_xml_callback=None, power_on=power_on, cleanup_instance_dir=created_dir,
                cleanup_instance_disks=False)
        # No network: define and start the domain directly. The parent would also open an
        # external-event wait, plug no VIFs, enter the LXC disk handler and check for a vTPM
        # secret (nova/virt/libvirt/driver.py _create_guest_with_network, _create_guest),
        # none of which a diskless micro-VNF without ports needs.
        try:
            guest = libvirt_guest.Guest.create(xml, self._host)
            if power_on:
                self._vimprof_launched[instance.uuid] = time.monotonic() + LAUNCH_EVENTS_S
                guest.launch()
            return guest
        except Exception:
            LOG.error("Failed to start libvirt guest", instance=instance)
            with excutils.save_and_reraise_exception():
                self._cleanup(context, instance, network_info, block_device_info,
                              destroy_vifs=False, cleanup_instance_dir=created_dir,
                              cleanup_instance_disks=False)

    def _create_kernel_only(self, context, instance) -> bool:
        """Instance directory and the kernel (from Glance via _base, as Nova caches it);
        returns whether the directory was created."""
        instance_dir = libvirt_utils.get_instance_path(instance)
        created = not os.path.exists(instance_dir)
        fileutils.ensure_tree(instance_dir)
        fname = imagecache.get_cache_fname(instance.kernel_id)
        conf = libvirt_driver.CONF
        base = os.path.join(conf.instances_path, conf.image_cache.subdirectory_name, fname)
        target = os.path.join(instance_dir, "kernel")
        if os.path.exists(base) and not os.path.exists(target):
            # Cached kernel: a plain copy. The raw image backend would also run
            # `qemu-img info` on it (a subprocess) to check a format a kernel does not have.
            shutil.copyfile(base, target)
            os.utime(base)  # in use: keeps the image cache manager from aging it out
            return created
        self.image_backend.by_name(instance, "kernel", "raw").cache(
            fetch_func=libvirt_utils.fetch_raw_image, context=context, filename=fname,
            image_id=instance.kernel_id)
        return created

    def _wait_running(self, instance) -> None:
        """Poll the domain state every poll_interval_s() until RUNNING (Nova: 0.5 s)."""
        interval = poll_interval_s()
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            if self.get_info(instance, use_cache=False).state == power_state.RUNNING:
                return
            if time.monotonic() > deadline:
                raise exception.InstanceNotRunning(instance_id=instance.uuid)
            time.sleep(interval)

    # -- lifecycle events ----------------------------------------------------------------------

    def emit_event(self, event):
        """Drop libvirt's Started/Resumed events of a guest the tuned spawn launched in the
        last LAUNCH_EVENTS_S seconds; pass everything else to the compute manager.

        For each, the manager fetches and refreshes the instance (two conductor calls,
        nova/compute/manager.py handle_lifecycle_event, _sync_instance_power_state) to find
        power state RUNNING, which the build saves itself. Stock Nova hides that work in its
        0.5 s boot poll; once the tuned spawn returns in milliseconds it lands on the
        vm_state=active save and the client's ACTIVE poll instead. Periodic power-state sync
        (sync_power_state_interval) still covers the guest.
        """
        if isinstance(event, virtevent.LifecycleEvent) and event.transition in (
                virtevent.EVENT_LIFECYCLE_STARTED, virtevent.EVENT_LIFECYCLE_RESUMED):
            now = time.monotonic()
            launched = self._vimprof_launched
            for uuid in [u for u, end in launched.items() if end < now]:
                del launched[uuid]
            if event.uuid in launched:
                LOG.debug("Dropping %s of a guest launched by the tuned spawn", event)
                return
        super().emit_event(event)

    # -- XML for diskless guests ---------------------------------------------------------------

    def _get_guest_storage_config(self, context, instance, *args, **kwargs):
        if instance.uuid in self._vimprof_diskless:
            return []
        return super()._get_guest_storage_config(context, instance, *args, **kwargs)

    def _guest_add_memory_balloon(self, guest):  # a staticmethod in LibvirtDriver
        if guest.uuid in self._vimprof_diskless:
            # No balloon (libvirt would add a virtio one by default, polled for stats).
            balloon = vconfig.LibvirtConfigMemoryBalloon()
            balloon.model = "none"
            guest.add_device(balloon)
            return
        libvirt_driver.LibvirtDriver._guest_add_memory_balloon(guest)

    def _add_rng_device(self, guest, flavor, image_meta):
        if guest.uuid in self._vimprof_diskless:
            return  # a micro-VNF has no use for a virtio RNG
        return super()._add_rng_device(guest, flavor, image_meta)

    def _set_guest_for_inst_kernel(self, instance, guest, inst_path, root_device_name,
                                   image_meta):
        super()._set_guest_for_inst_kernel(instance, guest, inst_path, root_device_name,
                                           image_meta)
        if instance.uuid in self._vimprof_diskless and \
                not image_meta.properties.get("os_command_line"):
            guest.os_cmdline = CONSOLE  # no root= for a guest without a disk
