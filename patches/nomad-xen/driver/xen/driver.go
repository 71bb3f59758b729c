// Package xen is a Nomad task driver for micro-VNFs: diskless kernels run under Xen's xl or under
// qemu-system, in two variants after Ventre et al. 2016: "stock" (kernel shipped by the job's
// artifact stanza, guest launched through Nomad's executor, logs collected by Nomad) and "tuned"
// (kernel from a local image dir, direct spawn, log collection disabled, everything that can be
// done once done at SetConfig). StartTask is instrumented with timestamp hooks (hooks.go).
package xen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	cstructs "github.com/hashicorp/nomad/client/structs"
	"github.com/hashicorp/nomad/drivers/shared/eventer"
	"github.com/hashicorp/nomad/drivers/shared/executor"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/shared/hclspec"
	pstructs "github.com/hashicorp/nomad/plugins/shared/structs"
)

const (
	// PluginName is the driver name jobs select with driver = "xen".
	PluginName = "xen"
	// PluginVersion of this driver.
	PluginVersion = "0.1.0"

	fingerprintPeriod = 30 * time.Second
	taskHandleVersion = 1

	serialFile    = "xen-serial.log"
	qemuErrFile   = "xen-qemu.stderr"
	xlConfigFile  = "xen-domain.cfg"
	readyPoll     = 500 * time.Microsecond
	domainPoll    = 5 * time.Millisecond
	domainWatchIv = 1 * time.Second
)

var (
	pluginInfo = &base.PluginInfoResponse{
		Type:              base.PluginTypeDriver,
		PluginApiVersions: []string{drivers.ApiVersion010},
		PluginVersion:     PluginVersion,
		Name:              PluginName,
	}
	qemuVersionRe = regexp.MustCompile(`version (\d[\d.]+)`)

	_ drivers.DriverPlugin = (*Driver)(nil)
)

// Driver is the xen task driver.
type Driver struct {
	eventer *eventer.Eventer
	ctx     context.Context
	logger  hclog.Logger

	mu          sync.RWMutex
	s           *settings
	caps        *drivers.Capabilities
	nomadConfig *base.ClientDriverConfig
	hooks       *hookSink

	tasks sync.Map // task id -> *taskHandle

	versionsMu sync.Mutex
	versions   map[string]string // backend -> version (cached: binaries fixed at SetConfig)
}

// NewDriver returns a driver with default settings (SetConfig replaces them).
func NewDriver(ctx context.Context, logger hclog.Logger) *Driver {
	logger = logger.Named(PluginName)
	s, _ := parseSettings(Config{})
	d := &Driver{eventer: eventer.NewEventer(ctx, logger), ctx: ctx, logger: logger, s: s,
		versions: map[string]string{}}
	d.caps = capabilitiesFor(s.variant)
	d.hooks = newHookSink("", logger)
	return d
}

func capabilitiesFor(variant string) *drivers.Capabilities {
	return &drivers.Capabilities{
		SendSignals:          false,
		Exec:                 false,
		FSIsolation:          drivers.FSIsolationNone,
		NetIsolationModes:    []drivers.NetIsolationMode{drivers.NetIsolationModeHost, drivers.NetIsolationModeGroup},
		MountConfigs:         drivers.MountConfigSupportNone,
		DisableLogCollection: variant == VariantTuned,
	}
}

func (d *Driver) PluginInfo() (*base.PluginInfoResponse, error) { return pluginInfo, nil }
func (d *Driver) ConfigSchema() (*hclspec.Spec, error)          { return configSpec, nil }
func (d *Driver) TaskConfigSchema() (*hclspec.Spec, error)      { return taskConfigSpec, nil }

// SetConfig parses and resolves the plugin config once: variant, image dirs, backend binaries,
// allowlists, hooks file. Nomad calls it before any Capabilities/StartTask call of an instance
// (helper/pluginutils/loader/loader.go Dispense), so the variant can drive Capabilities.
func (d *Driver) SetConfig(cfg *base.Config) error {
	var c Config
	if len(cfg.PluginConfig) != 0 {
		if err := base.MsgPackDecode(cfg.PluginConfig, &c); err != nil {
			return err
		}
	}
	s, err := parseSettings(c)
	if err != nil {
		return fmt.Errorf("nomad-driver-xen plugin config: %v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.s = s
	d.caps = capabilitiesFor(s.variant)
	if cfg.AgentConfig != nil {
		d.nomadConfig = cfg.AgentConfig.Driver
	}
	if d.hooks.path != s.hooksFile {
		if d.hooks.ch != nil {
			d.hooks.Flush()
			close(d.hooks.ch)
		}
		d.hooks = newHookSink(s.hooksFile, d.logger)
	}
	return nil
}

func (d *Driver) settings() *settings {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.s
}

// FlushHooks waits until every hook record emitted so far is in the hooks file.
func (d *Driver) FlushHooks() {
	d.mu.RLock()
	h := d.hooks
	d.mu.RUnlock()
	h.Flush()
}

func (d *Driver) Capabilities() (*drivers.Capabilities, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.caps, nil
}

// --- fingerprint --------------------------------------------------------------------------

func (d *Driver) Fingerprint(ctx context.Context) (<-chan *drivers.Fingerprint, error) {
	ch := make(chan *drivers.Fingerprint)
	go func() {
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.ctx.Done():
				return
			case <-t.C:
				t.Reset(fingerprintPeriod)
				select {
				case ch <- d.buildFingerprint():
				case <-ctx.Done():
					return
				case <-d.ctx.Done():
					return
				}
			}
		}
	}()
	return ch, nil
}

// backendVersion runs the backend's version command once and caches the answer.
func (d *Driver) backendVersion(b *backend) (string, error) {
	d.versionsMu.Lock()
	defer d.versionsMu.Unlock()
	key := b.name + "\x00" + b.binary
	if v, ok := d.versions[key]; ok {
		return v, nil
	}
	var v string
	switch b.name {
	case BackendQemu:
		out, err := exec.Command(b.binary, "--version").Output()
		if err != nil {
			return "", fmt.Errorf("%s --version: %v", b.binary, err)
		}
		m := qemuVersionRe.FindSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("cannot parse qemu version from %q", strings.TrimSpace(string(out)))
		}
		v = string(m[1])
	case BackendXL:
		out, err := exec.Command(b.binary, xlVersionArgs(b.binary)[1:]...).Output()
		if err != nil {
			return "", fmt.Errorf("xl info: %v (is this a Xen dom0?)", err)
		}
		v = parseXenVersion(out)
		if v == "" {
			return "", errors.New("xl info: no xen_version")
		}
	}
	d.versions[key] = v
	return v, nil
}

func (d *Driver) buildFingerprint() *drivers.Fingerprint {
	s := d.settings()
	fp := &drivers.Fingerprint{Attributes: map[string]*pstructs.Attribute{}}
	var found []string
	var why []string
	for _, b := range []*backend{&s.qemu, &s.xl} {
		if b.binary == "" {
			why = append(why, b.missing.Error())
			continue
		}
		v, err := d.backendVersion(b)
		if err != nil {
			why = append(why, fmt.Sprintf("backend %s: %v", b.name, err))
			continue
		}
		found = append(found, b.name)
		fp.Attributes["driver.xen."+b.name] = pstructs.NewBoolAttribute(true)
		fp.Attributes["driver.xen."+b.name+".version"] = pstructs.NewStringAttribute(v)
	}
	if len(found) == 0 {
		fp.Health = drivers.HealthStateUndetected
		fp.HealthDescription = "no backend: " + strings.Join(why, "; ")
		return fp
	}
	fp.Attributes["driver.xen"] = pstructs.NewBoolAttribute(true)
	fp.Attributes["driver.xen.variant"] = pstructs.NewStringAttribute(s.variant)
	fp.Attributes["driver.xen.backends"] = pstructs.NewStringAttribute(strings.Join(found, ","))
	fp.Attributes["driver.xen.version"] = pstructs.NewStringAttribute(PluginVersion)
	fp.Health = drivers.HealthStateHealthy
	fp.HealthDescription = drivers.DriverHealthy
	return fp
}

// --- start --------------------------------------------------------------------------------

// prepared is everything init_environment produces for the launch.
type prepared struct {
	tc      TaskConfig
	b       *backend
	kernel  string
	name    string
	memMB   int64
	taskDir string
	serial  string
}

func (d *Driver) prepare(cfg *drivers.TaskConfig, s *settings) (*prepared, error) {
	p := &prepared{}
	if err := cfg.DecodeDriverConfig(&p.tc); err != nil {
		return nil, fmt.Errorf("failed to decode driver config: %v", err)
	}
	b, err := s.backend(p.tc.Backend)
	if err != nil {
		return nil, err
	}
	if b.binary == "" {
		return nil, b.missing
	}
	p.b = b
	if err := checkArgs(b, p.tc.Args); err != nil {
		return nil, err
	}
	if err := checkText("cmdline", p.tc.Cmdline, maxCmdline); err != nil {
		return nil, err
	}
	if err := checkText("ready_line", p.tc.ReadyLine, maxReadyLine); err != nil {
		return nil, err
	}
	if cfg.Resources == nil || cfg.Resources.NomadResources == nil {
		return nil, errors.New("task has no resources")
	}
	p.memMB = cfg.Resources.NomadResources.Memory.MemoryMB
	if p.memMB < minMemoryMB || p.memMB > maxMemoryMB {
		return nil, fmt.Errorf("resources.memory = %d MB: must be within [%d, %d]", p.memMB, minMemoryMB, maxMemoryMB)
	}
	p.taskDir = cfg.TaskDir().Dir
	p.kernel, err = resolveKernel(p.tc.Kernel, p.taskDir, s.imageDirs)
	if err != nil {
		return nil, err
	}
	p.name = guestName(cfg.Name, cfg.AllocID)
	p.serial = filepath.Join(p.taskDir, serialFile)
	return p, nil
}

// StartTask launches the guest and returns once it is ready (ready_line seen on its console) or,
// without ready_line, once the hypervisor reports it running. Emits the hooks.
func (d *Driver) StartTask(cfg *drivers.TaskConfig) (*drivers.TaskHandle, *drivers.DriverNetwork, error) {
	var ht hookTimes
	ht.initStart = nowNs()
	if _, ok := d.tasks.Load(cfg.ID); ok {
		return nil, nil, fmt.Errorf("task with ID %q already started", cfg.ID)
	}
	s := d.settings()
	p, err := d.prepare(cfg, s)
	if err != nil {
		d.reject(cfg, err)
		return nil, nil, err
	}
	var h *taskHandle
	var cleanup func()
	switch p.b.name {
	case BackendQemu:
		h, cleanup, err = d.startQemu(cfg, s, p, &ht)
	case BackendXL:
		h, cleanup, err = d.startXL(cfg, s, p, &ht)
	}
	if err != nil {
		return nil, nil, err
	}
	// clean: release per-start temporaries, persist state, register
	if cleanup != nil {
		cleanup()
	}
	handle := drivers.NewTaskHandle(taskHandleVersion)
	handle.Config = cfg
	if err := handle.SetDriverState(&h.state); err != nil {
		h.destroy()
		return nil, nil, fmt.Errorf("failed to set driver state: %v", err)
	}
	d.tasks.Store(cfg.ID, h)
	ht.cleanEnd = nowNs()
	d.emitHooks(cfg, &ht, s, p.b.name)
	return handle, nil, nil
}

// reject surfaces a refused task as a driver task event too (StartTask's error becomes a
// "Driver Failure" event as well).
func (d *Driver) reject(cfg *drivers.TaskConfig, err error) {
	ev := &drivers.TaskEvent{TaskID: cfg.ID, TaskName: cfg.Name, AllocID: cfg.AllocID, Timestamp: time.Now(),
		Message: "xen driver rejected the task: " + err.Error()}
	go func() { _ = d.eventer.EmitEvent(ev) }()
}

func (d *Driver) newState(cfg *drivers.TaskConfig, s *settings, p *prepared) TaskState {
	return TaskState{TaskConfig: cfg, Backend: p.b.name, Variant: s.variant, Name: p.name, SerialPath: p.serial}
}

// startExecutor launches argv under Nomad's executor (stock variant).
func (d *Driver) startExecutor(cfg *drivers.TaskConfig, argv []string, h *taskHandle) error {
	d.mu.RLock()
	nc := d.nomadConfig
	d.mu.RUnlock()
	if nc == nil {
		return errors.New("stock variant needs the Nomad agent config (SetConfig without AgentConfig)")
	}
	execImpl, pluginClient, err := executor.CreateExecutor(
		d.logger.With("task_name", cfg.Name, "alloc_id", cfg.AllocID), nc,
		&executor.ExecutorConfig{
			LogFile:  filepath.Join(cfg.TaskDir().Dir, "executor.out"),
			LogLevel: "debug",
		})
	if err != nil {
		return fmt.Errorf("starting the Nomad executor: %v", err)
	}
	ps, err := execImpl.Launch(&executor.ExecCommand{
		Cmd: argv[0], Args: argv[1:], Env: cfg.EnvList(), User: cfg.User, TaskDir: cfg.TaskDir().Dir,
		StdoutPath: cfg.StdoutPath, StderrPath: cfg.StderrPath, NetworkIsolation: cfg.NetworkIsolation,
		Resources: cfg.Resources.Copy(),
	})
	if err != nil {
		pluginClient.Kill()
		return fmt.Errorf("executor launch of %s: %v", filepath.Base(argv[0]), err)
	}
	h.exec, h.pluginClient = execImpl, pluginClient
	h.state.Pid = ps.Pid
	h.state.ReattachConfig = pstructs.ReattachConfigFromGoPlugin(pluginClient.ReattachConfig())
	go h.watchExecutor()
	return nil
}

func (d *Driver) startQemu(cfg *drivers.TaskConfig, s *settings, p *prepared, ht *hookTimes) (*taskHandle, func(), error) {
	argv := qemuArgs(p.b.binary, qemuGuest{Name: p.name, Kernel: p.kernel, Cmdline: p.tc.Cmdline,
		MemoryMB: p.memMB, Accelerator: s.accelerator, SerialPath: p.serial, Extra: p.tc.Args})
	// the serial file is opened for reading before qemu starts so no byte is missed
	serial, err := os.OpenFile(p.serial, os.O_RDONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the serial console file: %v", err)
	}
	h := newHandle(d.logger, d.newState(cfg, s, p), s.xl.binary)
	ht.spawnStart = nowNs()
	errPath := filepath.Join(p.taskDir, qemuErrFile)
	if s.variant == VariantStock {
		err = d.startExecutor(cfg, argv, h)
	} else {
		err = d.spawnDirect(argv, errPath, h)
	}
	if err != nil {
		serial.Close()
		return nil, nil, err
	}
	if p.tc.ReadyLine != "" {
		seen, werr := waitReady(readySource{r: serial, follow: true}, p.tc.ReadyLine, h.doneCh, s.readyTimeout, readyPoll)
		if werr != nil {
			serial.Close()
			h.destroy()
			d.tasksDeleteQuiet(cfg.ID)
			msg := fmt.Sprintf("qemu guest %s: %v; console: %q", p.name, werr, tail(seen, 300))
			if s.variant == VariantStock {
				msg += "; qemu stderr: in the task's stderr log"
			} else if e := readFileTail(errPath, 300); e != "" {
				msg += "; qemu stderr: " + e
			}
			return nil, nil, errors.New(msg)
		}
	} else if h.exited() {
		serial.Close()
		return nil, nil, fmt.Errorf("qemu guest %s exited at once; qemu stderr: %s", p.name, readFileTail(errPath, 300))
	}
	ht.cleanStart = nowNs()
	h.state.StartedAt = time.Now()
	if h.state.Pid > 0 {
		if _, _, st, err := procStat(h.state.Pid); err == nil {
			h.state.PidStartTicks = st
		}
	}
	return h, func() { serial.Close() }, nil
}

func (d *Driver) tasksDeleteQuiet(id string) { d.tasks.Delete(id) }

// spawnDirect starts argv as the plugin's own child in a new session (it survives a plugin
// restart; RecoverTask finds it by pid).
func (d *Driver) spawnDirect(argv []string, errPath string, h *taskHandle) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	ef, err := os.OpenFile(errPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		cmd.Stderr = ef
		cmd.Stdout = ef
	}
	err = cmd.Start()
	if ef != nil {
		ef.Close()
	}
	if err != nil {
		return fmt.Errorf("starting %s: %v", filepath.Base(argv[0]), err)
	}
	h.state.Pid = cmd.Process.Pid
	go h.watchCmd(cmd)
	return nil
}

func (d *Driver) startXL(cfg *drivers.TaskConfig, s *settings, p *prepared, ht *hookTimes) (*taskHandle, func(), error) {
	bin := p.b.binary
	cfgPath := filepath.Join(p.taskDir, xlConfigFile)
	conf := renderXLConfig(xlDomain{Name: p.name, Kernel: p.kernel, Cmdline: p.tc.Cmdline, MemoryMB: p.memMB,
		Bridge: s.bridge, AllocID: cfg.AllocID, Task: cfg.Name})
	if err := os.WriteFile(cfgPath, conf, 0o600); err != nil {
		return nil, nil, fmt.Errorf("writing the xl domain config: %v", err)
	}
	removeCfg := func() { _ = os.Remove(cfgPath) }
	if _, err := xlDomID(bin, p.name); err == nil {
		removeCfg()
		return nil, nil, fmt.Errorf("a Xen domain named %s already exists", p.name)
	}
	h := newHandle(d.logger, d.newState(cfg, s, p), bin)
	paused := p.tc.ReadyLine != ""
	stock := s.variant == VariantStock
	argv := xlCreateArgs(bin, cfgPath, stock, paused, p.tc.Args)
	fail := func(err error) (*taskHandle, func(), error) {
		h.destroy()
		removeCfg()
		return nil, nil, fmt.Errorf("xl guest %s: %v", p.name, err)
	}
	ht.spawnStart = nowNs()
	if stock {
		if err := d.startExecutor(cfg, argv, h); err != nil {
			return fail(err)
		}
	} else if _, err := runXL(bin, argv); err != nil {
		return fail(err)
	}
	// the domain exists once `xl domid` answers (xl create -F does not return)
	deadline := time.Now().Add(s.readyTimeout)
	for {
		id, err := xlDomID(bin, p.name)
		if err == nil {
			h.state.DomID = id
			break
		}
		if h.exited() {
			return fail(errors.New("xl create exited before the domain existed"))
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("domain not created within %s", s.readyTimeout))
		}
		time.Sleep(domainPoll)
	}
	// Under the executor `xl create -F` does not return: the domain id exists as soon as
	// the domain does, but xl keeps it paused while it builds it (loads the kernel) and
	// unpauses it at the end, which is where a plain `xl create` returns (tuned). Wait for
	// that too, so both variants' spawn ends at the same point (tools/xl/xl_vmcontrol.c).
	for stock && !paused {
		out, err := exec.Command(bin, xlListArgs(bin, p.name)[1:]...).Output()
		if st, perr := parseXLState(out, p.name); err == nil && perr == nil && !strings.Contains(st, "p") {
			break
		}
		if h.exited() {
			return fail(errors.New("xl create exited before the domain was built"))
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("domain not built within %s", s.readyTimeout))
		}
		time.Sleep(domainPoll)
	}
	if !stock {
		go h.watchDomain(domainWatchIv)
	}
	if paused {
		con := exec.Command(bin, xlConsoleArgs(bin, p.name)[1:]...)
		out, err := con.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		if err := con.Start(); err != nil {
			return fail(fmt.Errorf("xl console: %v", err))
		}
		stopCon := func() { _ = con.Process.Kill(); _ = con.Wait() }
		if _, err := runXL(bin, xlUnpauseArgs(bin, p.name)); err != nil {
			stopCon()
			return fail(err)
		}
		seen, werr := waitReady(readySource{r: out, follow: false}, p.tc.ReadyLine, h.doneCh, s.readyTimeout, readyPoll)
		stopCon()
		if werr != nil {
			return fail(fmt.Errorf("%v; console: %q", werr, tail(seen, 300)))
		}
	}
	ht.cleanStart = nowNs()
	h.state.StartedAt = time.Now()
	return h, removeCfg, nil
}

// --- recover, wait, stop, destroy ----------------------------------------------------------

// RecoverTask reattaches to a guest after an agent/plugin restart: the executor (stock), the
// qemu pid (tuned, checked against its recorded start time), or the xl domain (tuned).
func (d *Driver) RecoverTask(handle *drivers.TaskHandle) error {
	if handle == nil {
		return errors.New("handle cannot be nil")
	}
	if _, ok := d.tasks.Load(handle.Config.ID); ok {
		return nil
	}
	var st TaskState
	if err := handle.GetDriverState(&st); err != nil {
		return fmt.Errorf("failed to decode driver state: %v", err)
	}
	s := d.settings()
	h := newHandle(d.logger, st, s.xl.binary)
	switch {
	case st.ReattachConfig != nil:
		rc, err := pstructs.ReattachConfigToGoPlugin(st.ReattachConfig)
		if err != nil {
			return fmt.Errorf("failed to build reattach config: %v", err)
		}
		// v1.6's ReattachToExecutor needs no agent config (v1.11's took the node's compute)
		execImpl, pc, err := executor.ReattachToExecutor(rc, d.logger.With("task_name", st.TaskConfig.Name))
		if err != nil {
			return fmt.Errorf("failed to reattach to executor: %v", err)
		}
		h.exec, h.pluginClient = execImpl, pc
		go h.watchExecutor()
	case st.Backend == BackendQemu:
		_, _, start, err := procStat(st.Pid)
		if err != nil || start != st.PidStartTicks {
			return fmt.Errorf("qemu pid %d of task %s is gone", st.Pid, st.TaskConfig.Name)
		}
		go h.watchPid(st.Pid)
	case st.Backend == BackendXL:
		id, err := xlDomID(h.xlBin, st.Name)
		if err != nil || id != st.DomID {
			return fmt.Errorf("xen domain %s (id %d) of task %s is gone", st.Name, st.DomID, st.TaskConfig.Name)
		}
		go h.watchDomain(domainWatchIv)
	default:
		return fmt.Errorf("unknown backend %q in driver state", st.Backend)
	}
	d.tasks.Store(st.TaskConfig.ID, h)
	return nil
}

func (d *Driver) handle(id string) (*taskHandle, bool) {
	v, ok := d.tasks.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*taskHandle), true
}

func (d *Driver) WaitTask(ctx context.Context, taskID string) (<-chan *drivers.ExitResult, error) {
	h, ok := d.handle(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	ch := make(chan *drivers.ExitResult, 1)
	go func() {
		defer close(ch)
		select {
		case <-ctx.Done():
			return
		case <-d.ctx.Done():
			return
		case <-h.doneCh:
		}
		ch <- h.result()
	}()
	return ch, nil
}

// StopTask stops the guest (graceful for xl, signal for qemu, up to timeout). Idempotent.
func (d *Driver) StopTask(taskID string, timeout time.Duration, signal string) error {
	h, ok := d.handle(taskID)
	if !ok {
		return drivers.ErrTaskNotFound
	}
	return h.stop(timeout, signal)
}

// DestroyTask force-stops (when force) and forgets the task. Idempotent: an unknown task is
// already destroyed.
func (d *Driver) DestroyTask(taskID string, force bool) error {
	h, ok := d.handle(taskID)
	if !ok {
		return nil
	}
	if h.IsRunning() && !force {
		return errors.New("cannot destroy running task")
	}
	h.destroy()
	d.tasks.Delete(taskID)
	return nil
}

func (d *Driver) InspectTask(taskID string) (*drivers.TaskStatus, error) {
	h, ok := d.handle(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	return h.TaskStatus(), nil
}

// TaskStats streams resource usage: the executor's stats (stock), /proc of the qemu process
// (tuned), or `xl list` (xl tuned).
func (d *Driver) TaskStats(ctx context.Context, taskID string, interval time.Duration) (<-chan *drivers.TaskResourceUsage, error) {
	h, ok := d.handle(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	if h.exec != nil && h.state.Backend == BackendQemu {
		return h.exec.Stats(ctx, interval)
	}
	ch := make(chan *drivers.TaskResourceUsage)
	go func() {
		defer close(ch)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.ctx.Done():
				return
			case <-t.C:
				t.Reset(interval)
			}
			u := h.usage()
			if u == nil {
				continue
			}
			select {
			case ch <- u:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

func (h *taskHandle) usage() *drivers.TaskResourceUsage {
	now := time.Now()
	var cpuSec float64
	var rss uint64
	switch h.state.Backend {
	case BackendQemu:
		ut, stt, _, err := procStat(h.state.Pid)
		if err != nil {
			return nil
		}
		cpuSec = float64(ut+stt) / clockTicks
		rss = procRSS(h.state.Pid)
		pct := h.cpu.sample(now, cpuSec)
		return &drivers.TaskResourceUsage{Timestamp: now.UnixNano(), ResourceUsage: &cstructs.ResourceUsage{
			MemoryStats: &cstructs.MemoryStats{RSS: rss, Measured: []string{"RSS"}},
			CpuStats: &cstructs.CpuStats{UserMode: float64(ut) / clockTicks * 1e9, SystemMode: float64(stt) / clockTicks * 1e9,
				Percent: pct, Measured: []string{"System Mode", "User Mode", "Percent"}},
		}}
	case BackendXL:
		out, err := exec.Command(h.xlBin, xlListArgs(h.xlBin, h.state.Name)[1:]...).Output()
		if err != nil {
			return nil
		}
		mem, cpu, err := parseXLList(out, h.state.Name)
		if err != nil {
			return nil
		}
		pct := h.cpu.sample(now, cpu)
		return &drivers.TaskResourceUsage{Timestamp: now.UnixNano(), ResourceUsage: &cstructs.ResourceUsage{
			MemoryStats: &cstructs.MemoryStats{Usage: mem << 20, Measured: []string{"Usage"}},
			CpuStats:    &cstructs.CpuStats{Percent: pct, Measured: []string{"Percent"}},
		}}
	}
	return nil
}

func (d *Driver) TaskEvents(ctx context.Context) (<-chan *drivers.TaskEvent, error) {
	return d.eventer.TaskEvents(ctx)
}

func (d *Driver) SignalTask(string, string) error {
	return errors.New("xen driver cannot signal guests")
}

func (d *Driver) ExecTask(string, []string, time.Duration) (*drivers.ExecTaskResult, error) {
	return nil, errors.New("xen driver cannot exec in guests")
}
