package xen

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/nomad/helper/testlog"
	"github.com/hashicorp/nomad/helper/uuid"
	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	dtestutil "github.com/hashicorp/nomad/plugins/drivers/testutils"
	"github.com/shoenig/test/must"
)

const readyLine = "vimprof-testvnf: ready"

// testKernel is the test micro-VNF (scripts/setup builds it); the test is skipped without it
// or without qemu.
func testKernel(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath(defaultQemuBinary); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	root := os.Getenv("VIMPROF_CACHE")
	if root == "" {
		home, _ := os.UserHomeDir()
		root = filepath.Join(home, ".cache", "vimprof")
	}
	k := filepath.Join(root, "images", "testvnf.elf")
	if _, err := os.Stat(k); err != nil {
		t.Skipf("test micro-VNF %s missing (run scripts/setup)", k)
	}
	return k
}

type harness struct {
	*dtestutil.DriverHarness
	d *Driver
}

func newHarness(t *testing.T, c Config) *harness {
	t.Helper()
	// the harness's MkAllocDir leaves its os.MkdirTemp dirs behind: keep them in the test's dir
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDriver(ctx, testlog.HCLogger(t))
	h := dtestutil.NewDriverHarness(t, d)
	var data []byte
	must.NoError(t, base.MsgPackEncode(&data, c))
	must.NoError(t, h.SetConfig(&base.Config{PluginConfig: data,
		AgentConfig: &base.AgentConfig{Driver: &base.ClientDriverConfig{}}}))
	hh := &harness{DriverHarness: h, d: d}
	// no h.Kill(): it closes the client (whose Shutdown RPC stops the server) and stops the
	// server itself, a data race inside go-plugin; MkAllocDir's cleanup closes the client
	t.Cleanup(cancel)
	return hh
}

func testResources(memMB int64) *drivers.Resources {
	return &drivers.Resources{
		NomadResources: &structs.AllocatedTaskResources{
			Memory: structs.AllocatedMemoryResources{MemoryMB: memMB},
			Cpu:    structs.AllocatedCpuResources{CpuShares: 100},
		},
		LinuxResources: &drivers.LinuxResources{
			MemoryLimitBytes: memMB << 20,
			CPUShares:        100,
		},
	}
}

// newTask builds a task with an alloc dir (and logmon when logs); v1.6's MkAllocDir creates the
// task's cgroup itself (cgroups v2 only; the stock executor places no task in a cgroup unless
// ResourceLimits/BasicProcessCgroup is set, which this driver does not do).
func newTask(t *testing.T, h *harness, tc TaskConfig, logs bool) *drivers.TaskConfig {
	t.Helper()
	allocID := uuid.Generate()
	task := &drivers.TaskConfig{AllocID: allocID, ID: uuid.Generate(), Name: "vnf", NodeName: "test-node",
		Resources: testResources(32)}
	must.NoError(t, task.EncodeConcreteDriverConfig(&tc))
	cleanup := h.MkAllocDir(task, logs)
	t.Cleanup(cleanup)
	return task
}

// guestPids lists processes whose command line carries `-name <name>` (leak checks).
func guestPids(name string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	needle := []byte("\x00-name\x00" + name + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, needle) {
			// zombies have an empty cmdline, so a match is a live process
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitNoGuest(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(guestPids(name)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("guest %s leaked: pids %v", name, guestPids(name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitExit(t *testing.T, h *harness, id string) *drivers.ExitResult {
	t.Helper()
	ch, err := h.WaitTask(context.Background(), id)
	must.NoError(t, err)
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatalf("task %s did not exit", id)
	}
	return nil
}
