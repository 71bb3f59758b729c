package xen

// The xl backend: a diskless PV kernel (ClickOS style) described by a rendered domain config,
// created with `xl create`, watched through `xl domid`, ended with `xl shutdown` / `xl destroy`.

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// xlDomain is what the domain config is rendered from. All strings are already validated
// (name sanitised, kernel resolved, cmdline checked by checkText, bridge by validIdent).
type xlDomain struct {
	Name     string
	Kernel   string
	Cmdline  string
	MemoryMB int64
	Bridge   string
	AllocID  string
	Task     string
}

// noBridge as xl.bridge renders no vif: a dom0 without netback, a bridge or the (bash)
// vif-bridge hotplug script cannot create one, and instantiation needs no network.
const noBridge = "none"

// renderXLConfig renders the xl domain config (xl.cfg(5)) of a diskless PV guest.
func renderXLConfig(d xlDomain) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# rendered by nomad-driver-xen: alloc %s task %s\n", sanitizeName(d.AllocID), sanitizeName(d.Task))
	fmt.Fprintf(&b, "name = %q\n", d.Name)
	b.WriteString("type = \"pv\"\n")
	fmt.Fprintf(&b, "kernel = %q\n", d.Kernel)
	if d.Cmdline != "" {
		fmt.Fprintf(&b, "cmdline = %q\n", d.Cmdline)
	}
	fmt.Fprintf(&b, "memory = %d\n", d.MemoryMB)
	fmt.Fprintf(&b, "maxmem = %d\n", d.MemoryMB)
	b.WriteString("vcpus = 1\n")
	if d.Bridge == noBridge { // diskless and network-less (ClickOS "novif" style)
		b.WriteString("vif = [ ]\n")
	} else {
		fmt.Fprintf(&b, "vif = [ %q ]\n", "bridge="+d.Bridge)
	}
	b.WriteString("disk = [ ]\n")
	b.WriteString("on_poweroff = \"destroy\"\n")
	b.WriteString("on_reboot = \"destroy\"\n")
	b.WriteString("on_crash = \"destroy\"\n")
	return b.Bytes()
}

// xlCreateArgs is the argv of `xl create`. foreground (-F) keeps xl attached to the domain (the
// stock variant runs it under Nomad's executor); paused (-p) lets the driver attach the console
// before the guest prints anything; extra are operator-allowlisted options.
func xlCreateArgs(bin, cfgPath string, foreground, paused bool, extra []string) []string {
	a := []string{bin, "create"}
	if foreground {
		a = append(a, "-F")
	}
	if paused {
		a = append(a, "-p")
	}
	a = append(a, extra...)
	return append(a, cfgPath)
}

func xlConsoleArgs(bin, name string) []string  { return []string{bin, "console", "-t", "pv", name} }
func xlUnpauseArgs(bin, name string) []string  { return []string{bin, "unpause", name} }
func xlDomIDArgs(bin, name string) []string    { return []string{bin, "domid", name} }
func xlListArgs(bin, name string) []string     { return []string{bin, "list", name} }
func xlShutdownArgs(bin, name string) []string { return []string{bin, "shutdown", "-w", name} }
func xlDestroyArgs(bin, name string) []string  { return []string{bin, "destroy", name} }
func xlVersionArgs(bin string) []string        { return []string{bin, "info"} }
func runXL(bin string, argv []string) ([]byte, error) {
	out, err := exec.Command(bin, argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %v: %s", strings.Join(append([]string{"xl"}, argv[1:]...), " "), err,
			strings.TrimSpace(string(out)))
	}
	return out, nil
}

// xlDomID returns the domain id of name (error when the domain does not exist).
func xlDomID(bin, name string) (int, error) {
	out, err := exec.Command(bin, xlDomIDArgs(bin, name)[1:]...).Output()
	if err != nil {
		return 0, fmt.Errorf("xl domid %s: %v", name, err)
	}
	id, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("xl domid %s: unexpected output %q", name, out)
	}
	return id, nil
}

// parseXLState returns the State column of name's row in `xl list <name>` output, e.g.
// "-b----" (blocked) or "--p---" (paused: still being built by xl create).
func parseXLState(out []byte, name string) (string, error) {
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == name {
			return f[4], nil
		}
	}
	return "", fmt.Errorf("xl list: domain %s not listed", name)
}

// parseXLList reads `xl list <name>` output: memory (MiB) and cpu time (s) of the domain row.
//
//	Name                                        ID   Mem VCPUs      State   Time(s)
//	nomad-vnf-1234abcd                           3     8     1     -b----       0.1
func parseXLList(out []byte, name string) (memMB uint64, cpuSec float64, err error) {
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == name {
			memMB, err = strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("xl list: bad Mem %q", f[2])
			}
			cpuSec, err = strconv.ParseFloat(f[5], 64)
			if err != nil {
				return 0, 0, fmt.Errorf("xl list: bad Time(s) %q", f[5])
			}
			return memMB, cpuSec, nil
		}
	}
	return 0, 0, fmt.Errorf("xl list: domain %s not listed", name)
}

// parseXenVersion extracts xen_major.xen_minor+xen_extra from `xl info` output.
func parseXenVersion(out []byte) string {
	kv := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if v := kv["xen_version"]; v != "" {
		return v
	}
	if kv["xen_major"] != "" {
		return kv["xen_major"] + "." + kv["xen_minor"] + kv["xen_extra"]
	}
	return ""
}
