package xen

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/drivers/proto"
	"github.com/shoenig/test/must"
	"google.golang.org/grpc"
)

// qemuConfig is a plugin config allowing the test micro-VNF's image dir.
func qemuConfig(t *testing.T, variant string) (Config, string) {
	k := testKernel(t)
	hooks := filepath.Join(t.TempDir(), "hooks.jsonl")
	return Config{Variant: variant, ImageDirs: []string{filepath.Dir(k)}, HooksFile: hooks, ReadyTimeout: "20s",
		Qemu: QemuConfig{Accelerator: "tcg", ArgsAllowlist: []string{"-smp", "1"}}}, hooks
}

func hookEventFrom(t *testing.T, ch <-chan *drivers.TaskEvent, taskID string) *drivers.TaskEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.TaskID == taskID && ev.Annotations["vimprof_hooks"] != "" {
				return ev
			}
		case <-timeout:
			t.Fatal("no vimprof hooks task event")
		}
	}
}

func checkHooks(t *testing.T, ev *drivers.TaskEvent, task *drivers.TaskConfig, hooksFile string, d *Driver, variant string) {
	t.Helper()
	ns := func(k string) int64 {
		v, err := strconv.ParseInt(ev.Annotations[k], 10, 64)
		must.NoError(t, err, must.Sprint(k))
		return v
	}
	must.Eq(t, "init_environment,spawn,clean", ev.Annotations["vimprof_hooks"])
	must.True(t, ns("init_environment_start_ns") <= ns("init_environment_end_ns"))
	must.Eq(t, ns("init_environment_end_ns"), ns("spawn_start_ns"))
	must.True(t, ns("spawn_start_ns") < ns("spawn_end_ns"))
	must.Eq(t, ns("spawn_end_ns"), ns("clean_start_ns"))
	must.True(t, ns("clean_start_ns") <= ns("clean_end_ns"))
	must.Eq(t, ns("clean_end_ns"), ev.Timestamp.UnixNano())

	d.FlushHooks()
	f, err := os.Open(hooksFile)
	must.NoError(t, err)
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.UseNumber()
		must.NoError(t, dec.Decode(&m), must.Sprint(sc.Text()))
		if m["alloc_id"] == task.AllocID {
			lines = append(lines, m)
		}
	}
	must.Len(t, 3, lines)
	for i, name := range HookNames {
		m := lines[i]
		must.Eq[any](t, name, m["hook"])
		must.Eq[any](t, "xen", m["driver"])
		must.Eq[any](t, variant, m["variant"])
		must.Eq[any](t, "qemu", m["backend"])
		must.Eq[any](t, "vnf", m["task"])
		must.Eq[any](t, "test-node", m["node"])
		must.Eq(t, ev.Annotations[name+"_start_ns"], m["t_ns"].(json.Number).String())
		must.Eq(t, ev.Annotations[name+"_end_ns"], m["end_ns"].(json.Number).String())
	}
}

// Boots the real test micro-VNF under qemu (TCG) through Nomad's driver harness, in both
// variants: ready_line seen before StartTask returns, hooks emitted, stats, stop, no leak.
func TestQemu_StartReadyStop(t *testing.T) {
	for _, variant := range []string{VariantTuned, VariantStock} {
		t.Run(variant, func(t *testing.T) {
			c, hooksFile := qemuConfig(t, variant)
			h := newHarness(t, c)
			caps, err := h.d.Capabilities()
			must.NoError(t, err)
			must.Eq(t, variant == VariantTuned, caps.DisableLogCollection)
			// what Nomad's client sees through the plugin's gRPC server (with Serve's fix)
			resp, err := h.d.capabilitiesInterceptor(context.Background(), nil,
				&grpc.UnaryServerInfo{FullMethod: capabilitiesMethod},
				func(context.Context, any) (any, error) {
					return &proto.CapabilitiesResponse{Capabilities: &proto.DriverCapabilities{}}, nil
				})
			must.NoError(t, err)
			must.Eq(t, variant == VariantTuned, resp.(*proto.CapabilitiesResponse).Capabilities.DisableLogCollection)

			evCh, err := h.TaskEvents(context.Background())
			must.NoError(t, err)
			task := newTask(t, h, TaskConfig{Backend: "qemu", Kernel: "testvnf.elf", Cmdline: "vimprof=1",
				ReadyLine: readyLine, Args: []string{"-smp", "1"}}, variant == VariantStock)
			handle, _, err := h.StartTask(task)
			must.NoError(t, err)
			name := guestName(task.Name, task.AllocID)

			serial, err := os.ReadFile(filepath.Join(task.TaskDir().Dir, serialFile))
			must.NoError(t, err)
			must.StrContains(t, string(serial), readyLine)
			must.Len(t, 1, guestPids(name))

			var st TaskState
			must.NoError(t, handle.GetDriverState(&st))
			must.Eq(t, variant, st.Variant)
			must.Eq(t, variant == VariantStock, st.ReattachConfig != nil)

			checkHooks(t, hookEventFrom(t, evCh, task.ID), task, hooksFile, h.d, variant)

			status, err := h.InspectTask(task.ID)
			must.NoError(t, err)
			must.Eq(t, drivers.TaskStateRunning, status.State)

			ctx, cancel := context.WithCancel(context.Background())
			sch, err := h.TaskStats(ctx, task.ID, 100*time.Millisecond)
			must.NoError(t, err)
			u := <-sch
			cancel()
			must.NotNil(t, u.ResourceUsage)
			must.Positive(t, u.ResourceUsage.MemoryStats.RSS)

			must.NoError(t, h.StopTask(task.ID, 3*time.Second, "SIGTERM"))
			res := waitExit(t, h, task.ID)
			must.NotNil(t, res)
			_ = h.StopTask(task.ID, time.Second, "SIGTERM") // idempotent: no panic, no hang
			must.NoError(t, h.DestroyTask(task.ID, true))
			must.NoError(t, h.DestroyTask(task.ID, true))
			waitNoGuest(t, name)
		})
	}
}

// Without ready_line spawn ends when qemu is running; a destroy while running leaks nothing.
func TestQemu_NoReadyLine_DestroyForce(t *testing.T) {
	c, _ := qemuConfig(t, VariantTuned)
	h := newHarness(t, c)
	task := newTask(t, h, TaskConfig{Backend: "qemu", Kernel: testKernel(t)}, false)
	_, _, err := h.StartTask(task)
	must.NoError(t, err)
	name := guestName(task.Name, task.AllocID)
	must.Len(t, 1, guestPids(name))
	must.ErrorContains(t, h.DestroyTask(task.ID, false), "running")
	must.NoError(t, h.DestroyTask(task.ID, true))
	waitNoGuest(t, name)
}

// A guest that dies at boot fails StartTask with the reason and leaves nothing behind.
func TestQemu_GuestDiesAtBoot(t *testing.T) {
	for _, variant := range []string{VariantTuned, VariantStock} {
		t.Run(variant, func(t *testing.T) {
			c, _ := qemuConfig(t, variant)
			h := newHarness(t, c)
			task := newTask(t, h, TaskConfig{Backend: "qemu", Kernel: "bad.elf", ReadyLine: readyLine}, variant == VariantStock)
			// shipped by the "artifact" into local/: an x86-64 user-space ELF qemu refuses to boot
			bad, err := os.ReadFile("/bin/true")
			must.NoError(t, err)
			must.NoError(t, os.WriteFile(filepath.Join(task.TaskDir().LocalDir, "bad.elf"), bad, 0o644))
			_, _, err = h.StartTask(task)
			must.ErrorContains(t, err, "exited before it was ready")
			if variant == VariantTuned { // stock: qemu's stderr goes to Nomad's task log instead
				must.StrContains(t, err.Error(), "Error loading")
			}
			waitNoGuest(t, guestName(task.Name, task.AllocID))
			_, err = h.InspectTask(task.ID)
			must.ErrorContains(t, err, "not found")
		})
	}
}

func TestQemu_Rejections(t *testing.T) {
	c, _ := qemuConfig(t, VariantTuned)
	cases := map[string]struct {
		tc   TaskConfig
		want string
	}{
		"backend":      {TaskConfig{Backend: "kvmtool", Kernel: "testvnf.elf"}, `backend = "kvmtool"`},
		"escape":       {TaskConfig{Backend: "qemu", Kernel: "../../../../etc/passwd"}, "may not climb"},
		"absolute":     {TaskConfig{Backend: "qemu", Kernel: "/etc/passwd"}, "not inside an allowed directory"},
		"args":         {TaskConfig{Backend: "qemu", Kernel: "testvnf.elf", Args: []string{"-device", "x"}}, "args_allowlist"},
		"cmdline":      {TaskConfig{Backend: "qemu", Kernel: "testvnf.elf", Cmdline: "a\nb"}, "forbidden character"},
		"missing xl":   {TaskConfig{Backend: "xl", Kernel: "testvnf.elf"}, ""},
		"memory small": {TaskConfig{Backend: "qemu", Kernel: "testvnf.elf"}, "resources.memory"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, c)
			task := newTask(t, h, tc.tc, false)
			if name == "memory small" {
				task.Resources.NomadResources.Memory.MemoryMB = 1
			}
			_, _, err := h.StartTask(task)
			must.Error(t, err)
			if name == "missing xl" {
				if h.d.settings().xl.binary != "" {
					t.Skip("xl installed here")
				}
				must.ErrorContains(t, err, "backend xl unavailable")
				return
			}
			must.ErrorContains(t, err, tc.want)
		})
	}
}

func TestQemu_MissingBinary(t *testing.T) {
	c, _ := qemuConfig(t, VariantTuned)
	c.Qemu.Binary = "/nonexistent/qemu-system-x86_64"
	c.XL.Binary = "/nonexistent/xl"
	h := newHarness(t, c)
	fpCh, err := h.Fingerprint(context.Background())
	must.NoError(t, err)
	fp := <-fpCh
	must.Eq(t, drivers.HealthStateUndetected, fp.Health)
	must.StrContains(t, fp.HealthDescription, "backend qemu unavailable")
	task := newTask(t, h, TaskConfig{Backend: "qemu", Kernel: "testvnf.elf"}, false)
	_, _, err = h.StartTask(task)
	must.ErrorContains(t, err, "backend qemu unavailable")
}

func TestQemu_Fingerprint(t *testing.T) {
	c, _ := qemuConfig(t, VariantTuned)
	h := newHarness(t, c)
	fpCh, err := h.Fingerprint(context.Background())
	must.NoError(t, err)
	fp := <-fpCh
	must.Eq(t, drivers.HealthStateHealthy, fp.Health)
	v, ok := fp.Attributes["driver.xen.qemu.version"].GetString()
	must.True(t, ok)
	must.True(t, strings.Count(v, ".") >= 1, must.Sprint(v))
	variant, _ := fp.Attributes["driver.xen.variant"].GetString()
	must.Eq(t, VariantTuned, variant)
}

// An agent restart: a fresh driver instance recovers the running guest from the persisted
// handle, then stops it.
func TestQemu_Recover(t *testing.T) {
	for _, variant := range []string{VariantTuned, VariantStock} {
		t.Run(variant, func(t *testing.T) {
			c, _ := qemuConfig(t, variant)
			h1 := newHarness(t, c)
			task := newTask(t, h1, TaskConfig{Backend: "qemu", Kernel: "testvnf.elf", ReadyLine: readyLine}, variant == VariantStock)
			handle, _, err := h1.StartTask(task)
			must.NoError(t, err)
			name := guestName(task.Name, task.AllocID)

			h2 := newHarness(t, c)
			must.NoError(t, h2.RecoverTask(handle))
			must.NoError(t, h2.RecoverTask(handle)) // already attached: no-op
			status, err := h2.InspectTask(task.ID)
			must.NoError(t, err)
			must.Eq(t, drivers.TaskStateRunning, status.State)
			must.NoError(t, h2.StopTask(task.ID, 3*time.Second, "SIGTERM"))
			waitExit(t, h2, task.ID)
			must.NoError(t, h2.DestroyTask(task.ID, true))
			waitNoGuest(t, name)

			// a gone guest is not recoverable
			h3 := newHarness(t, c)
			if variant == VariantTuned {
				must.ErrorContains(t, h3.RecoverTask(handle), "gone")
			} else {
				must.Error(t, h3.RecoverTask(handle))
			}
			_ = h1.DestroyTask(task.ID, true)
		})
	}
}
