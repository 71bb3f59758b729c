package xen

// The qemu backend: the same diskless kernel booted with qemu-system -kernel, serial console to
// a file the driver watches for ready_line.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// qemuGuest is what the qemu command line is built from (all values validated).
type qemuGuest struct {
	Name        string
	Kernel      string
	Cmdline     string
	MemoryMB    int64
	Accelerator string
	SerialPath  string
	Extra       []string
}

// qemuArgs is the full argv (argv[0] = the resolved qemu binary).
func qemuArgs(bin string, g qemuGuest) []string {
	a := []string{bin,
		"-name", g.Name,
		"-nodefaults", "-nographic", "-no-reboot",
		"-accel", g.Accelerator,
		"-m", strconv.FormatInt(g.MemoryMB, 10) + "M",
		"-kernel", g.Kernel,
	}
	if g.Cmdline != "" {
		a = append(a, "-append", g.Cmdline)
	}
	a = append(a, "-serial", "file:"+g.SerialPath)
	return append(a, g.Extra...)
}

var errGuestExited = errors.New("guest exited before it was ready")

// readySource yields console bytes. follow=true means EOF is "no data yet" (a file the
// hypervisor appends to); follow=false means EOF ends the console (a pipe).
type readySource struct {
	r      io.Reader
	follow bool
}

// waitReady blocks until needle appears in src, the guest exits (done closed), or timeout.
// Polls a followed file every pollEvery. Returns the console text seen (tail) for errors.
func waitReady(src readySource, needle string, done <-chan struct{}, timeout, pollEvery time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	if dl, ok := src.r.(interface{ SetReadDeadline(time.Time) error }); ok && !src.follow {
		_ = dl.SetReadDeadline(deadline) // a blocking pipe must not outlive the timeout
	}
	nb := []byte(needle)
	var seen []byte
	buf := make([]byte, 4096)
	for {
		n, err := src.r.Read(buf)
		if n > 0 {
			seen = append(seen, buf[:n]...)
			if bytes.Contains(seen, nb) {
				return seen, nil
			}
			if len(seen) > 64*1024 { // keep a bounded tail that can still contain the needle
				seen = append(seen[:0], seen[len(seen)-len(nb)-4096:]...)
			}
			continue
		}
		if err != nil && (err != io.EOF || !src.follow) {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return seen, fmt.Errorf("guest did not print ready_line %q within %s", needle, timeout)
			}
			select {
			case <-done:
				return seen, errGuestExited
			default:
			}
			return seen, fmt.Errorf("reading guest console: %v", err)
		}
		select {
		case <-done:
			// one last read: the guest may have printed the line just before exiting
			if n, _ := src.r.Read(buf); n > 0 {
				seen = append(seen, buf[:n]...)
				if bytes.Contains(seen, nb) {
					return seen, nil
				}
			}
			return seen, errGuestExited
		default:
		}
		if time.Now().After(deadline) {
			return seen, fmt.Errorf("guest did not print ready_line %q within %s", needle, timeout)
		}
		time.Sleep(pollEvery)
	}
}

// tail returns the last n bytes of b as a printable string (for error messages).
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == '\n' || c >= 0x20 && c < 0x7f {
			out = append(out, c)
		}
	}
	return string(bytes.TrimSpace(out))
}

// readFileTail reads up to n trailing bytes of path ("" when unreadable).
func readFileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return tail(b, n)
}
