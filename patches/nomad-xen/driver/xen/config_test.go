package xen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoenig/test/must"
)

func TestParseSettings_Defaults(t *testing.T) {
	s, err := parseSettings(Config{})
	must.NoError(t, err)
	must.Eq(t, VariantStock, s.variant)
	must.Eq(t, "tcg", s.accelerator)
	must.Eq(t, "xenbr0", s.bridge)
	must.Eq(t, defaultReadyTimeout, s.readyTimeout)
	must.False(t, capabilitiesFor(VariantStock).DisableLogCollection)
	must.True(t, capabilitiesFor(VariantTuned).DisableLogCollection)
}

func TestParseSettings_Rejections(t *testing.T) {
	cases := map[string]struct {
		c    Config
		want string
	}{
		"variant":        {Config{Variant: "fast"}, `variant = "fast"`},
		"accelerator":    {Config{Qemu: QemuConfig{Accelerator: "tcg,thread=multi"}}, "qemu.accelerator"},
		"bridge":         {Config{XL: XLConfig{Bridge: "br0; rm -rf /"}}, "xl.bridge"},
		"hooks relative": {Config{HooksFile: "hooks.jsonl"}, "hooks_file"},
		"image dir rel":  {Config{ImageDirs: []string{"images"}}, "image_dirs"},
		"ready_timeout":  {Config{ReadyTimeout: "soon"}, "ready_timeout"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := parseSettings(tc.c)
			must.ErrorContains(t, err, tc.want)
		})
	}
}

func TestParseSettings_MissingBackend(t *testing.T) {
	s, err := parseSettings(Config{Qemu: QemuConfig{Binary: "/nonexistent/qemu"}, XL: XLConfig{Binary: "no-such-xl-binary"}})
	must.NoError(t, err)
	must.Eq(t, "", s.qemu.binary)
	must.ErrorContains(t, s.qemu.missing, "backend qemu unavailable")
	must.ErrorContains(t, s.xl.missing, "backend xl unavailable")
}

func TestCheckArgsAndText(t *testing.T) {
	b := resolveBackend(BackendQemu, "sh", "sh", []string{"-smp", "2"})
	must.NoError(t, checkArgs(&b, []string{"-smp", "2"}))
	must.ErrorContains(t, checkArgs(&b, []string{"-smp", "2", "-device"}), `"-device" is not in the qemu.args_allowlist`)
	none := resolveBackend(BackendXL, "sh", "sh", nil)
	must.ErrorContains(t, checkArgs(&none, []string{"-q"}), "xl.args_allowlist")

	must.NoError(t, checkText("cmdline", "console=hvc0 a=b", maxCmdline))
	for _, bad := range []string{"a\"\nkernel = \"/etc/shadow", "a\\b", "x'y", "tab\there"} {
		must.ErrorContains(t, checkText("cmdline", bad, maxCmdline), "forbidden character")
	}
	must.ErrorContains(t, checkText("ready_line", strings.Repeat("x", maxReadyLine+1), maxReadyLine), "at most")
}

func TestSanitizeName(t *testing.T) {
	must.Eq(t, "web", sanitizeName("web"))
	must.Eq(t, "a-b-c", sanitizeName("a b/c"))
	must.Eq(t, "task", sanitizeName("../"))
	must.Eq(t, maxNameLen, len(sanitizeName(strings.Repeat("x", 200))))
	must.Eq(t, "nomad-my-vnf-1a2b3c4d", guestName("my vnf", "1a2b3c4d-0000-1111"))
	must.Eq(t, "nomad-x-etc-pass", guestName("x", "/etc/passwd"))
}

func TestResolveKernel(t *testing.T) {
	root := t.TempDir()
	images := filepath.Join(root, "images")
	task := filepath.Join(root, "alloc", "vnf")
	outside := filepath.Join(root, "secret")
	for _, d := range []string{images, filepath.Join(task, "local"), outside} {
		must.NoError(t, os.MkdirAll(d, 0o755))
	}
	write := func(p string) { must.NoError(t, os.WriteFile(p, []byte("k"), 0o644)) }
	write(filepath.Join(images, "vnf.elf"))
	write(filepath.Join(images, "both.elf"))
	write(filepath.Join(task, "local", "both.elf"))
	write(filepath.Join(task, "local", "art.elf"))
	write(filepath.Join(outside, "shadow"))
	must.NoError(t, os.Symlink(filepath.Join(outside, "shadow"), filepath.Join(images, "evil.elf")))
	must.NoError(t, os.Symlink(filepath.Join(outside, "shadow"), filepath.Join(task, "local", "evil2.elf")))
	must.NoError(t, os.Symlink(filepath.Join(images, "vnf.elf"), filepath.Join(task, "local", "link.elf")))
	must.NoError(t, os.Mkdir(filepath.Join(images, "dir.elf"), 0o755))
	dirs := []string{images}

	ok := map[string]string{
		"vnf.elf":                        filepath.Join(images, "vnf.elf"),
		"art.elf":                        filepath.Join(task, "local", "art.elf"),
		"both.elf":                       filepath.Join(task, "local", "both.elf"), // local/ first
		"link.elf":                       filepath.Join(images, "vnf.elf"),         // symlink into image_dirs
		filepath.Join(images, "vnf.elf"): filepath.Join(images, "vnf.elf"),
		filepath.Join(task, "local/a/../art.elf"): filepath.Join(task, "local", "art.elf"),
	}
	for k, want := range ok {
		got, err := resolveKernel(k, task, dirs)
		must.NoError(t, err, must.Sprint(k))
		must.Eq(t, want, got)
	}
	bad := map[string]string{
		"":                               "kernel must be set",
		"../../secret/shadow":            "may not climb",
		"local/../../../secret/shadow":   "may not climb",
		"evil.elf":                       "not inside an allowed directory",
		"evil2.elf":                      "not inside an allowed directory",
		filepath.Join(outside, "shadow"): "not inside an allowed directory",
		filepath.Join(images, "../secret/shadow"): "not inside an allowed directory",
		"/etc/passwd": "not inside an allowed directory",
		"missing.elf": "not found",
		"dir.elf":     "not a regular file",
		"a\x00b":      "NUL",
	}
	for k, want := range bad {
		_, err := resolveKernel(k, task, dirs)
		must.ErrorContains(t, err, want, must.Sprint(k))
	}
}
