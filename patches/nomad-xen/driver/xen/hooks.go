package xen

// Timestamp hooks for the paper's driver breakdown (Ventre et al. 2016, Fig. 6d):
// init_environment, spawn, clean. Each StartTask yields one driver TaskEvent carrying all three
// (Nomad keeps only 10 events per task) and three JSON lines in the hooks file.
//
// The hot path (Emit) only copies a fixed-size record into a buffered channel; a single writer
// goroutine formats the lines and appends them to the file (O_APPEND, whole lines per write).

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/drivers"
)

// Hook names, in order.
const (
	HookInit  = "init_environment"
	HookSpawn = "spawn"
	HookClean = "clean"
)

// HookNames lists the hooks a successful StartTask emits, in order.
var HookNames = [3]string{HookInit, HookSpawn, HookClean}

// hookRecord is one hook interval: start and end in ns since the Unix epoch.
type hookRecord struct {
	hook    string
	startNs int64
	endNs   int64
	allocID string
	task    string
	variant string
	backend string
	node    string
}

// hookSink appends hook records to a JSON-lines file from a background goroutine.
type hookSink struct {
	path    string
	ch      chan hookRecord
	logger  hclog.Logger
	dropped atomic.Int64
	done    chan struct{}
	pending sync.WaitGroup
}

// newHookSink starts the writer; path "" disables the file (Emit then does nothing).
func newHookSink(path string, logger hclog.Logger) *hookSink {
	s := &hookSink{path: path, logger: logger, done: make(chan struct{})}
	if path == "" {
		close(s.done)
		return s
	}
	s.ch = make(chan hookRecord, 4096)
	go s.run()
	return s
}

// Emit queues one record; never blocks (a full queue drops the record and counts it).
func (s *hookSink) Emit(r hookRecord) {
	if s.ch == nil {
		return
	}
	s.pending.Add(1)
	select {
	case s.ch <- r:
	default:
		s.pending.Done()
		s.dropped.Add(1)
	}
}

// Flush waits until every record emitted so far is written.
func (s *hookSink) Flush() { s.pending.Wait() }

func (s *hookSink) run() {
	defer close(s.done)
	var f *os.File
	buf := make([]byte, 0, 4096)
	for r := range s.ch {
		buf = appendHookLine(buf[:0], &r)
		n := 1
		// drain whatever else is queued into the same write (whole lines only)
	drain:
		for len(buf) < 64*1024 {
			select {
			case r2, ok := <-s.ch:
				if !ok {
					break drain
				}
				buf = appendHookLine(buf, &r2)
				n++
			default:
				break drain
			}
		}
		if f == nil {
			var err error
			f, err = os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				s.logger.Error("cannot open hooks_file; dropping hook records", "path", s.path, "error", err)
				f = nil
			}
		}
		if f != nil {
			if _, err := f.Write(buf); err != nil {
				s.logger.Error("writing hooks_file failed", "path", s.path, "error", err)
			}
		}
		for i := 0; i < n; i++ {
			s.pending.Done()
		}
	}
	if f != nil {
		_ = f.Close()
	}
}

// appendHookLine renders {"t_ns":..,"end_ns":..,"hook":..,"alloc_id":..,"task":..,"driver":"xen",
// "variant":..,"backend":..,"node":..}\n. Strings are JSON-quoted.
func appendHookLine(b []byte, r *hookRecord) []byte {
	b = append(b, `{"t_ns":`...)
	b = strconv.AppendInt(b, r.startNs, 10)
	b = append(b, `,"end_ns":`...)
	b = strconv.AppendInt(b, r.endNs, 10)
	b = append(b, `,"hook":`...)
	b = strconv.AppendQuote(b, r.hook)
	b = append(b, `,"alloc_id":`...)
	b = appendJSONString(b, r.allocID)
	b = append(b, `,"task":`...)
	b = appendJSONString(b, r.task)
	b = append(b, `,"driver":"xen","variant":`...)
	b = appendJSONString(b, r.variant)
	b = append(b, `,"backend":`...)
	b = appendJSONString(b, r.backend)
	b = append(b, `,"node":`...)
	b = appendJSONString(b, r.node)
	return append(b, "}\n"...)
}

// appendJSONString quotes s as a JSON string (escaping ", \ and control characters).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// hookTimes are the four instants (ns since the epoch) bounding the three hooks of one StartTask.
type hookTimes struct {
	initStart  int64 // StartTask entry
	spawnStart int64 // just before launch (= init_environment end)
	cleanStart int64 // guest ready / running (= spawn end)
	cleanEnd   int64 // just before StartTask returns
}

func (h *hookTimes) intervals() [3][2]int64 {
	return [3][2]int64{{h.initStart, h.spawnStart}, {h.spawnStart, h.cleanStart}, {h.cleanStart, h.cleanEnd}}
}

// nowNs is the hook clock: wall-clock ns since the Unix epoch (comparable with Nomad's
// TaskEvent.Time, which is also UnixNano).
func nowNs() int64 { return time.Now().UnixNano() }

// hookEvent builds the single driver TaskEvent carrying all three hooks. Details keys:
// vimprof_hooks = "init_environment,spawn,clean", <hook>_start_ns, <hook>_end_ns (decimal ns),
// plus variant and backend.
func hookEvent(cfg *drivers.TaskConfig, t *hookTimes, variant, backend string) *drivers.TaskEvent {
	iv := t.intervals()
	ann := make(map[string]string, 9)
	ann["vimprof_hooks"] = HookInit + "," + HookSpawn + "," + HookClean
	for i, name := range HookNames {
		ann[name+"_start_ns"] = strconv.FormatInt(iv[i][0], 10)
		ann[name+"_end_ns"] = strconv.FormatInt(iv[i][1], 10)
	}
	ann["variant"] = variant
	ann["backend"] = backend
	return &drivers.TaskEvent{
		TaskID:      cfg.ID,
		TaskName:    cfg.Name,
		AllocID:     cfg.AllocID,
		Timestamp:   time.Unix(0, t.cleanEnd),
		Message:     "vimprof hooks " + HookInit + "," + HookSpawn + "," + HookClean,
		Annotations: ann,
	}
}

// emitHooks writes the three JSON lines (queued) and sends the TaskEvent off the hot path.
func (d *Driver) emitHooks(cfg *drivers.TaskConfig, t *hookTimes, s *settings, backend string) {
	node := cfg.NodeName
	if node == "" {
		node = s.hostname
	}
	iv := t.intervals()
	d.mu.RLock()
	sink := d.hooks
	d.mu.RUnlock()
	for i, name := range HookNames {
		sink.Emit(hookRecord{hook: name, startNs: iv[i][0], endNs: iv[i][1], allocID: cfg.AllocID,
			task: cfg.Name, variant: s.variant, backend: backend, node: node})
	}
	// the TaskEvent (a map of decimal strings) is built and sent off the caller's path
	tc := *t
	variant := s.variant
	go func() {
		if err := d.eventer.EmitEvent(hookEvent(cfg, &tc, variant, backend)); err != nil {
			d.logger.Warn("failed to emit hook event", "error", err)
		}
	}()
}
