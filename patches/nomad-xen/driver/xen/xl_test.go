package xen

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/shoenig/test/must"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		must.NoError(t, os.WriteFile(p, got, 0o644))
	}
	want, err := os.ReadFile(p)
	must.NoError(t, err, must.Sprint("golden file missing: run go test -run "+t.Name()+" -update"))
	must.Eq(t, string(want), string(got))
}

var goldenDomain = xlDomain{Name: "nomad-vnf-1a2b3c4d", Kernel: "/root/.cache/vimprof/images/testvnf.elf",
	Cmdline: "console=hvc0 ip=10.0.0.2", MemoryMB: 8, Bridge: "xenbr0",
	AllocID: "1a2b3c4d-5e6f-7a8b-9c0d-112233445566", Task: "vnf"}

func TestXLConfig_Golden(t *testing.T) {
	golden(t, "xl-domain.cfg.golden", renderXLConfig(goldenDomain))
	d := goldenDomain
	d.Cmdline = ""
	golden(t, "xl-domain-nocmdline.cfg.golden", renderXLConfig(d))
}

func TestXLCommands_Golden(t *testing.T) {
	var b strings.Builder
	line := func(label string, argv []string) { b.WriteString(label + ": " + strings.Join(argv, " ") + "\n") }
	cfg := "/alloc/vnf/" + xlConfigFile
	line("create tuned", xlCreateArgs("xl", cfg, false, false, nil))
	line("create tuned ready_line", xlCreateArgs("xl", cfg, false, true, nil))
	line("create stock", xlCreateArgs("xl", cfg, true, false, nil))
	line("create stock ready_line args", xlCreateArgs("xl", cfg, true, true, []string{"-q"}))
	line("domid", xlDomIDArgs("xl", goldenDomain.Name))
	line("console", xlConsoleArgs("xl", goldenDomain.Name))
	line("unpause", xlUnpauseArgs("xl", goldenDomain.Name))
	line("list", xlListArgs("xl", goldenDomain.Name))
	line("shutdown", xlShutdownArgs("xl", goldenDomain.Name))
	line("destroy", xlDestroyArgs("xl", goldenDomain.Name))
	line("qemu", qemuArgs("/usr/bin/qemu-system-x86_64", qemuGuest{Name: goldenDomain.Name, Kernel: goldenDomain.Kernel,
		Cmdline: goldenDomain.Cmdline, MemoryMB: 8, Accelerator: "tcg", SerialPath: "/alloc/vnf/" + serialFile,
		Extra: []string{"-smp", "1"}}))
	golden(t, "commands.golden", []byte(b.String()))
}

func TestParseXL(t *testing.T) {
	out := []byte("Name                                        ID   Mem VCPUs\tState\tTime(s)\n" +
		"nomad-vnf-1a2b3c4d                           3     8     1     -b----       0.4\n")
	mem, cpu, err := parseXLList(out, "nomad-vnf-1a2b3c4d")
	must.NoError(t, err)
	must.Eq(t, uint64(8), mem)
	must.Eq(t, 0.4, cpu)
	_, _, err = parseXLList(out, "other")
	must.ErrorContains(t, err, "not listed")
	st, err := parseXLState(out, "nomad-vnf-1a2b3c4d")
	must.NoError(t, err)
	must.Eq(t, "-b----", st)
	building := []byte("nomad-vnf-1a2b3c4d                           3     8     1     --p---       0.0\n")
	st, err = parseXLState(building, "nomad-vnf-1a2b3c4d")
	must.NoError(t, err)
	must.StrContains(t, st, "p")
	_, err = parseXLState(building, "other")
	must.ErrorContains(t, err, "not listed")
	must.Eq(t, "4.17.3", parseXenVersion([]byte("xen_major : 4\nxen_minor : 17\nxen_extra : .3\n")))
	must.Eq(t, "4.19.1", parseXenVersion([]byte("xen_version            : 4.19.1\n")))
}

// fakeXL copies testdata/fake-xl into a fresh dir (its state lives beside it).
func fakeXL(t *testing.T) (bin, state string) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/fake-xl")
	must.NoError(t, err)
	bin = filepath.Join(dir, "xl")
	must.NoError(t, os.WriteFile(bin, b, 0o755))
	return bin, filepath.Join(dir, "state")
}

func readCalls(t *testing.T, state string) []string {
	b, err := os.ReadFile(filepath.Join(state, "calls"))
	must.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// The xl backend's whole flow against the fake xl: rendered config, command sequence, ready_line
// through `xl console`, domain watch, stop, destroy, fingerprint attributes.
func TestXL_FakeFlow(t *testing.T) {
	for _, variant := range []string{VariantTuned, VariantStock} {
		t.Run(variant, func(t *testing.T) {
			bin, state := fakeXL(t)
			images := t.TempDir()
			kernel := filepath.Join(images, "vnf.elf")
			must.NoError(t, os.WriteFile(kernel, []byte("kernel"), 0o644))
			h := newHarness(t, Config{Variant: variant, ImageDirs: []string{images},
				XL: XLConfig{Binary: bin, Bridge: "br-vnf"}, Qemu: QemuConfig{Binary: "/nonexistent"}})

			fpCh, err := h.Fingerprint(context.Background())
			must.NoError(t, err)
			fp := <-fpCh
			must.Eq(t, drivers.HealthStateHealthy, fp.Health)
			v, _ := fp.Attributes["driver.xen.xl.version"].GetString()
			must.Eq(t, "4.17.3", v)
			must.MapNotContainsKey(t, fp.Attributes, "driver.xen.qemu")

			task := newTask(t, h, TaskConfig{Backend: "xl", Kernel: "vnf.elf", Cmdline: "console=hvc0",
				ReadyLine: readyLine}, variant == VariantStock)
			handle, _, err := h.StartTask(task)
			must.NoError(t, err)
			name := guestName(task.Name, task.AllocID)

			cfg, err := os.ReadFile(filepath.Join(state, name+".cfg"))
			must.NoError(t, err)
			want := string(renderXLConfig(xlDomain{Name: name, Kernel: kernel, Cmdline: "console=hvc0", MemoryMB: 32,
				Bridge: "br-vnf", AllocID: task.AllocID, Task: task.Name}))
			must.Eq(t, want, string(cfg))
			must.StrContains(t, string(cfg), `vif = [ "bridge=br-vnf" ]`)
			// the rendered config is a per-start temporary, gone after clean
			_, err = os.Stat(filepath.Join(task.TaskDir().Dir, xlConfigFile))
			must.True(t, os.IsNotExist(err))

			calls := readCalls(t, state)
			cfgPath := filepath.Join(task.TaskDir().Dir, xlConfigFile)
			create := "create -p " + cfgPath
			if variant == VariantStock {
				create = "create -F -p " + cfgPath
			}
			must.SliceContains(t, calls, create)
			must.SliceContains(t, calls, "console -t pv "+name)
			must.SliceContains(t, calls, "unpause "+name)

			var st TaskState
			must.NoError(t, handle.GetDriverState(&st))
			must.Eq(t, 1, st.DomID)
			must.Eq(t, name, st.Name)

			status, err := h.InspectTask(task.ID)
			must.NoError(t, err)
			must.Eq(t, drivers.TaskStateRunning, status.State)

			if variant == VariantTuned {
				sch, err := h.TaskStats(context.Background(), task.ID, time.Second)
				must.NoError(t, err)
				u := <-sch
				must.Eq(t, uint64(8<<20), u.ResourceUsage.MemoryStats.Usage)
			}

			must.NoError(t, h.StopTask(task.ID, 2*time.Second, "SIGTERM"))
			must.NoError(t, h.StopTask(task.ID, 2*time.Second, "SIGTERM")) // idempotent
			waitExit(t, h, task.ID)
			must.SliceContains(t, readCalls(t, state), "shutdown -w "+name)
			_, err = os.Stat(filepath.Join(state, "dom-"+name))
			must.True(t, os.IsNotExist(err))
			must.NoError(t, h.DestroyTask(task.ID, true))
			must.NoError(t, h.DestroyTask(task.ID, true)) // idempotent
		})
	}
}

func TestXL_DomainNameTaken(t *testing.T) {
	bin, state := fakeXL(t)
	images := t.TempDir()
	must.NoError(t, os.WriteFile(filepath.Join(images, "vnf.elf"), []byte("k"), 0o644))
	h := newHarness(t, Config{Variant: VariantTuned, ImageDirs: []string{images}, XL: XLConfig{Binary: bin}})
	task := newTask(t, h, TaskConfig{Backend: "xl", Kernel: "vnf.elf"}, false)
	must.NoError(t, os.MkdirAll(state, 0o755))
	must.NoError(t, os.WriteFile(filepath.Join(state, "dom-"+guestName(task.Name, task.AllocID)), []byte("7\n"), 0o644))
	_, _, err := h.StartTask(task)
	must.ErrorContains(t, err, "already exists")
}
