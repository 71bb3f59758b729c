package xen

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/nomad/drivers/shared/executor"
	"github.com/hashicorp/nomad/plugins/drivers"
	pstructs "github.com/hashicorp/nomad/plugins/shared/structs"
	"golang.org/x/sys/unix"
)

// TaskState is persisted by the Nomad client (TaskHandle.DriverState) and handed back to
// RecoverTask after an agent or plugin restart.
type TaskState struct {
	TaskConfig     *drivers.TaskConfig
	Backend        string
	Variant        string
	Name           string // qemu -name / xl domain name
	Pid            int    // qemu pid (tuned) or the executor's child pid (stock)
	PidStartTicks  uint64 // /proc/<pid>/stat starttime: guards against pid reuse on recovery
	DomID          int    // xl domain id (0 for qemu)
	ReattachConfig *pstructs.ReattachConfig
	SerialPath     string
	StartedAt      time.Time
}

// taskHandle tracks one running guest.
type taskHandle struct {
	logger hclog.Logger
	state  TaskState
	xlBin  string

	// stock variant: the Nomad executor running qemu / `xl create -F`
	exec         executor.Executor
	pluginClient *plugin.Client

	doneCh   chan struct{}
	doneOnce sync.Once
	stopPoll chan struct{}

	mu          sync.RWMutex
	procState   drivers.TaskState
	completedAt time.Time
	exitResult  *drivers.ExitResult

	cpu cpuSampler
}

func newHandle(logger hclog.Logger, st TaskState, xlBin string) *taskHandle {
	return &taskHandle{logger: logger, state: st, xlBin: xlBin, doneCh: make(chan struct{}),
		stopPoll: make(chan struct{}), procState: drivers.TaskStateRunning}
}

func (h *taskHandle) setExited(res *drivers.ExitResult) {
	h.doneOnce.Do(func() {
		h.mu.Lock()
		h.procState = drivers.TaskStateExited
		h.exitResult = res
		h.completedAt = time.Now()
		h.mu.Unlock()
		close(h.doneCh)
	})
}

func (h *taskHandle) exited() bool {
	select {
	case <-h.doneCh:
		return true
	default:
		return false
	}
}

func (h *taskHandle) IsRunning() bool { return !h.exited() }

func (h *taskHandle) TaskStatus() *drivers.TaskStatus {
	h.mu.RLock()
	defer h.mu.RUnlock()
	attrs := map[string]string{"backend": h.state.Backend, "variant": h.state.Variant, "name": h.state.Name}
	if h.state.Pid != 0 {
		attrs["pid"] = strconv.Itoa(h.state.Pid)
	}
	if h.state.Backend == BackendXL {
		attrs["domid"] = strconv.Itoa(h.state.DomID)
	}
	var er *drivers.ExitResult
	if h.exitResult != nil {
		er = h.exitResult.Copy()
	}
	return &drivers.TaskStatus{
		ID: h.state.TaskConfig.ID, Name: h.state.TaskConfig.Name, State: h.procState,
		StartedAt: h.state.StartedAt, CompletedAt: h.completedAt, ExitResult: er, DriverAttributes: attrs,
	}
}

// result returns the exit result once exited (nil before).
func (h *taskHandle) result() *drivers.ExitResult {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.exitResult == nil {
		return nil
	}
	return h.exitResult.Copy()
}

// --- wait sources -------------------------------------------------------------------------

// watchExecutor waits on the stock variant's executor.
func (h *taskHandle) watchExecutor() {
	ps, err := h.exec.Wait(context.Background())
	if err != nil {
		h.setExited(&drivers.ExitResult{ExitCode: -1, Err: fmt.Errorf("executor: error waiting on process: %v", err)})
		return
	}
	h.setExited(&drivers.ExitResult{ExitCode: ps.ExitCode, Signal: ps.Signal})
}

// watchCmd waits on a child the plugin spawned itself (tuned qemu).
func (h *taskHandle) watchCmd(cmd *exec.Cmd) {
	err := cmd.Wait()
	res := &drivers.ExitResult{}
	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = int(ws.Signal())
			res.ExitCode = 128 + int(ws.Signal())
		} else {
			res.ExitCode = ps.ExitCode()
		}
	} else if err != nil {
		res.ExitCode = -1
		res.Err = err
	}
	h.setExited(res)
}

// watchPid waits for a process that is not the plugin's child (after recovery) via pidfd.
func (h *taskHandle) watchPid(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		h.setExited(&drivers.ExitResult{ExitCode: -1})
		return
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		break
	}
	// not our child: the exit status is not ours to read
	h.setExited(&drivers.ExitResult{ExitCode: 0})
}

// watchDomain polls `xl domid <name>` until the domain is gone (tuned xl).
func (h *taskHandle) watchDomain(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stopPoll:
			return
		case <-t.C:
		}
		if _, err := xlDomID(h.xlBin, h.state.Name); err != nil {
			h.setExited(&drivers.ExitResult{ExitCode: 0})
			return
		}
	}
}

// --- stop ---------------------------------------------------------------------------------

// stop ends the guest: xl shutdown then destroy, or SIGTERM then SIGKILL for qemu, or the
// executor's Shutdown. Safe to call repeatedly.
func (h *taskHandle) stop(timeout time.Duration, signal string) error {
	var firstErr error
	if h.state.Backend == BackendXL {
		if !h.exited() || h.exec != nil {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			_ = exec.CommandContext(ctx, h.xlBin, xlShutdownArgs(h.xlBin, h.state.Name)[1:]...).Run()
			cancel()
			_ = exec.Command(h.xlBin, xlDestroyArgs(h.xlBin, h.state.Name)[1:]...).Run()
		}
	}
	if h.exec != nil {
		if h.pluginClient == nil || !h.pluginClient.Exited() {
			if err := h.exec.Shutdown(signal, timeout); err != nil && (h.pluginClient == nil || !h.pluginClient.Exited()) {
				firstErr = fmt.Errorf("executor Shutdown failed: %v", err)
			}
		}
	} else if h.state.Backend == BackendQemu && h.state.Pid > 0 && !h.exited() {
		sig := syscall.SIGTERM
		if signal != "" {
			if s := parseSignal(signal); s != 0 {
				sig = s
			}
		}
		_ = syscall.Kill(h.state.Pid, sig)
		select {
		case <-h.doneCh:
		case <-time.After(timeout):
			_ = syscall.Kill(h.state.Pid, syscall.SIGKILL)
			select {
			case <-h.doneCh:
			case <-time.After(10 * time.Second):
				firstErr = fmt.Errorf("qemu pid %d did not exit after SIGKILL", h.state.Pid)
			}
		}
	}
	return firstErr
}

// destroy force-stops and releases everything the handle holds.
func (h *taskHandle) destroy() {
	_ = h.stop(0, "SIGKILL")
	select {
	case <-h.stopPoll:
	default:
		close(h.stopPoll)
	}
	if h.pluginClient != nil {
		h.pluginClient.Kill()
	}
}

func parseSignal(s string) syscall.Signal {
	switch strings.TrimPrefix(strings.ToUpper(s), "SIG") {
	case "TERM":
		return syscall.SIGTERM
	case "KILL":
		return syscall.SIGKILL
	case "INT":
		return syscall.SIGINT
	case "HUP":
		return syscall.SIGHUP
	case "QUIT":
		return syscall.SIGQUIT
	}
	return 0
}

// --- pid identity and stats ----------------------------------------------------------------

// procStat reads utime, stime (clock ticks) and starttime from /proc/<pid>/stat.
func procStat(pid int) (utime, stime, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// fields after ')' start at field 3 (state); utime=14, stime=15, starttime=22
	if len(f) < 20 {
		return 0, 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	utime, _ = strconv.ParseUint(f[11], 10, 64)
	stime, _ = strconv.ParseUint(f[12], 10, 64)
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return utime, stime, start, nil
}

func procRSS(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

const clockTicks = 100 // USER_HZ on Linux

type cpuSampler struct {
	mu       sync.Mutex
	lastTime time.Time
	lastCPU  float64
}

// sample converts cumulative cpu seconds into a percentage since the previous sample.
func (c *cpuSampler) sample(now time.Time, cpuSeconds float64) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	pct := 0.0
	if !c.lastTime.IsZero() {
		if dt := now.Sub(c.lastTime).Seconds(); dt > 0 {
			pct = (cpuSeconds - c.lastCPU) / dt * 100
		}
	}
	c.lastTime, c.lastCPU = now, cpuSeconds
	return pct
}
