package xen

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/drivers/shared/eventer"
	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/shoenig/test/must"
)

func TestHookLine_IsJSON(t *testing.T) {
	r := hookRecord{hook: HookSpawn, startNs: 1700000000123456789, endNs: 1700000000223456789,
		allocID: "a\"b", task: "t\\x\n", variant: "tuned", backend: "qemu", node: "n1"}
	line := appendHookLine(nil, &r)
	must.True(t, strings.HasSuffix(string(line), "}\n"))
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.UseNumber()
	var m map[string]any
	must.NoError(t, dec.Decode(&m))
	must.Eq(t, "1700000000123456789", m["t_ns"].(json.Number).String())
	must.Eq(t, "1700000000223456789", m["end_ns"].(json.Number).String())
	must.Eq[any](t, "spawn", m["hook"])
	must.Eq[any](t, "a\"b", m["alloc_id"])
	must.Eq[any](t, "t\\x\n", m["task"])
	must.Eq[any](t, "xen", m["driver"])
	must.Eq[any](t, "n1", m["node"])
}

func TestHookSink_AppendsWholeLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hooks.jsonl")
	must.NoError(t, os.WriteFile(p, []byte("{\"earlier\":1}\n"), 0o644))
	s := newHookSink(p, hclog.NewNullLogger())
	for i := 0; i < 1000; i++ {
		s.Emit(hookRecord{hook: HookClean, startNs: int64(i), endNs: int64(i + 1), allocID: "x"})
	}
	s.Flush()
	b, err := os.ReadFile(p)
	must.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	must.Len(t, 1001, lines)
	for _, l := range lines {
		must.True(t, json.Valid([]byte(l)), must.Sprint(l))
	}
	must.Eq(t, int64(0), s.dropped.Load())
}

// BenchmarkHookHotPath: what StartTask pays per hook (two clock reads + queueing the record).
// The writer's file I/O runs off the hot path (flushes excluded from the timing).
func BenchmarkHookHotPath(b *testing.B) {
	s := newHookSink(filepath.Join(b.TempDir(), "hooks.jsonl"), hclog.NewNullLogger())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := nowNs()
		s.Emit(hookRecord{hook: HookSpawn, startNs: t0, endNs: nowNs(), allocID: "1a2b3c4d-5e6f-7a8b-9c0d-112233445566",
			task: "vnf", variant: "tuned", backend: "qemu", node: "hostl"})
		if i%1024 == 1023 {
			b.StopTimer()
			s.Flush()
			b.StartTimer()
		}
	}
	b.StopTimer()
	s.Flush()
	b.ReportMetric(float64(s.dropped.Load()), "dropped")
}

// BenchmarkHookWithWrite: the same, but the timing includes the writer formatting and appending
// every line to the file (amortised over the batch the writer drains per write).
func BenchmarkHookWithWrite(b *testing.B) {
	s := newHookSink(filepath.Join(b.TempDir(), "hooks.jsonl"), hclog.NewNullLogger())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := nowNs()
		s.Emit(hookRecord{hook: HookSpawn, startNs: t0, endNs: nowNs(), allocID: "1a2b3c4d-5e6f-7a8b-9c0d-112233445566",
			task: "vnf", variant: "tuned", backend: "qemu", node: "hostl"})
		if i%1024 == 1023 {
			s.Flush()
		}
	}
	s.Flush()
	b.ReportMetric(float64(s.dropped.Load()), "dropped")
}

// BenchmarkHookSyncWrite: formatting and one O_APPEND write per line on the caller's path (the
// design the background writer avoids), for comparison.
func BenchmarkHookSyncWrite(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "hooks.jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := nowNs()
		r := hookRecord{hook: HookSpawn, startNs: t0, endNs: nowNs(), allocID: "1a2b3c4d-5e6f-7a8b-9c0d-112233445566",
			task: "vnf", variant: "tuned", backend: "qemu", node: "hostl"}
		buf = appendHookLine(buf[:0], &r)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHookStartTask: everything emitHooks does for one StartTask (3 hooks: three queued
// lines + building the one TaskEvent + handing it to the eventer), reported per hook as well.
func BenchmarkHookStartTask(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := NewDriver(ctx, hclog.NewNullLogger())
	d.eventer = eventer.NewEventer(ctx, hclog.NewNullLogger())
	ch, _ := d.eventer.TaskEvents(ctx)
	go func() {
		for range ch {
		}
	}()
	s, _ := parseSettings(Config{Variant: VariantTuned, HooksFile: filepath.Join(b.TempDir(), "hooks.jsonl")})
	d.hooks = newHookSink(s.hooksFile, hclog.NewNullLogger())
	cfg := &drivers.TaskConfig{ID: "1a2b3c4d/vnf/0", AllocID: "1a2b3c4d-5e6f-7a8b-9c0d-112233445566", Name: "vnf", NodeName: "hostl"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ht := hookTimes{initStart: nowNs()}
		ht.spawnStart = nowNs()
		ht.cleanStart = nowNs()
		ht.cleanEnd = nowNs()
		d.emitHooks(cfg, &ht, s, BackendQemu)
		if i%256 == 255 {
			b.StopTimer()
			d.hooks.Flush()
			b.StartTimer()
		}
	}
	b.StopTimer()
	d.hooks.Flush()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/3, "ns/hook")
}
