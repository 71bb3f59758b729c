package xen

// Plugin and task configuration: schemas, defaults, and every check on what a job author sends.
// Job authors are not trusted: kernels only from allowlisted directories (symlinks evaluated),
// names sanitised, cmdline/ready_line restricted to printable text, args only from the
// operator's allowlist.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/plugins/shared/hclspec"
)

const (
	VariantStock = "stock"
	VariantTuned = "tuned"

	BackendQemu = "qemu"
	BackendXL   = "xl"

	defaultQemuBinary   = "qemu-system-x86_64"
	defaultAccelerator  = "tcg"
	defaultXLBinary     = "xl"
	defaultBridge       = "xenbr0"
	defaultReadyTimeout = 30 * time.Second

	maxCmdline   = 1024
	maxReadyLine = 256
	maxNameLen   = 48
	minMemoryMB  = 4
	maxMemoryMB  = 1 << 20
)

var (
	// configSpec is the plugin block schema (agent HCL `plugin "nomad-driver-xen" { config {...} }`).
	configSpec = hclspec.NewObject(map[string]*hclspec.Spec{
		"image_dirs":    hclspec.NewAttr("image_dirs", "list(string)", false),
		"variant":       hclspec.NewDefault(hclspec.NewAttr("variant", "string", false), hclspec.NewLiteral(`"stock"`)),
		"hooks_file":    hclspec.NewAttr("hooks_file", "string", false),
		"ready_timeout": hclspec.NewAttr("ready_timeout", "string", false),
		"qemu": hclspec.NewBlock("qemu", false, hclspec.NewObject(map[string]*hclspec.Spec{
			"binary":         hclspec.NewAttr("binary", "string", false),
			"accelerator":    hclspec.NewAttr("accelerator", "string", false),
			"args_allowlist": hclspec.NewAttr("args_allowlist", "list(string)", false),
		})),
		"xl": hclspec.NewBlock("xl", false, hclspec.NewObject(map[string]*hclspec.Spec{
			"binary":         hclspec.NewAttr("binary", "string", false),
			"bridge":         hclspec.NewAttr("bridge", "string", false),
			"args_allowlist": hclspec.NewAttr("args_allowlist", "list(string)", false),
		})),
	})

	// taskConfigSpec is the job's `config {}` schema for driver "xen".
	taskConfigSpec = hclspec.NewObject(map[string]*hclspec.Spec{
		"backend":    hclspec.NewAttr("backend", "string", true),
		"kernel":     hclspec.NewAttr("kernel", "string", true),
		"cmdline":    hclspec.NewAttr("cmdline", "string", false),
		"ready_line": hclspec.NewAttr("ready_line", "string", false),
		"args":       hclspec.NewAttr("args", "list(string)", false),
	})
)

// QemuConfig is the plugin's `qemu {}` block.
type QemuConfig struct {
	Binary        string   `codec:"binary"`
	Accelerator   string   `codec:"accelerator"`
	ArgsAllowlist []string `codec:"args_allowlist"`
}

// XLConfig is the plugin's `xl {}` block.
type XLConfig struct {
	Binary        string   `codec:"binary"`
	Bridge        string   `codec:"bridge"`
	ArgsAllowlist []string `codec:"args_allowlist"`
}

// Config is the plugin configuration as decoded from the agent's plugin block.
type Config struct {
	ImageDirs    []string   `codec:"image_dirs"`
	Variant      string     `codec:"variant"`
	HooksFile    string     `codec:"hooks_file"`
	ReadyTimeout string     `codec:"ready_timeout"`
	Qemu         QemuConfig `codec:"qemu"`
	XL           XLConfig   `codec:"xl"`
}

// TaskConfig is the job's driver config.
type TaskConfig struct {
	Backend   string   `codec:"backend"`
	Kernel    string   `codec:"kernel"`
	Cmdline   string   `codec:"cmdline"`
	ReadyLine string   `codec:"ready_line"`
	Args      []string `codec:"args"`
}

// backend is what SetConfig resolves once per backend: the absolute binary (or why it is
// missing) and the operator's allowlist as a set.
type backend struct {
	name    string
	binary  string // absolute, symlinks evaluated; "" when missing
	missing error  // why binary is ""
	allowed map[string]struct{}
}

// settings is the parsed, validated, resolved plugin configuration (built once in SetConfig).
type settings struct {
	raw          Config
	variant      string
	imageDirs    []string // absolute, symlinks evaluated, existing
	hooksFile    string
	readyTimeout time.Duration
	accelerator  string
	bridge       string
	qemu         backend
	xl           backend
	hostname     string
}

var acceleratorAllowed = []string{"tcg", "kvm", "xen", "hvf", "whpx", "nvmm", "hax"}

// parseSettings validates and resolves a plugin Config. Errors name the offending key.
func parseSettings(c Config) (*settings, error) {
	s := &settings{raw: c, variant: c.Variant, hooksFile: c.HooksFile, readyTimeout: defaultReadyTimeout}
	if s.variant == "" {
		s.variant = VariantStock
	}
	if s.variant != VariantStock && s.variant != VariantTuned {
		return nil, fmt.Errorf("variant = %q: must be %q or %q", c.Variant, VariantStock, VariantTuned)
	}
	if c.ReadyTimeout != "" {
		d, err := time.ParseDuration(c.ReadyTimeout)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("ready_timeout = %q: want a positive duration such as \"30s\"", c.ReadyTimeout)
		}
		s.readyTimeout = d
	}
	if s.hooksFile != "" && !filepath.IsAbs(s.hooksFile) {
		return nil, fmt.Errorf("hooks_file = %q: must be an absolute path", s.hooksFile)
	}
	for _, d := range c.ImageDirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("image_dirs: %q is not an absolute path", d)
		}
		r, err := filepath.EvalSymlinks(d)
		if err != nil {
			continue // a missing image dir allows nothing; not fatal at agent start
		}
		s.imageDirs = append(s.imageDirs, r)
	}
	s.accelerator = c.Qemu.Accelerator
	if s.accelerator == "" {
		s.accelerator = defaultAccelerator
	}
	if !slices.Contains(acceleratorAllowed, s.accelerator) {
		return nil, fmt.Errorf("qemu.accelerator = %q: must be one of %v", s.accelerator, acceleratorAllowed)
	}
	s.bridge = c.XL.Bridge
	if s.bridge == "" {
		s.bridge = defaultBridge
	}
	if !validIdent(s.bridge) {
		return nil, fmt.Errorf("xl.bridge = %q: only [A-Za-z0-9_.-] allowed", s.bridge)
	}
	s.qemu = resolveBackend(BackendQemu, c.Qemu.Binary, defaultQemuBinary, c.Qemu.ArgsAllowlist)
	s.xl = resolveBackend(BackendXL, c.XL.Binary, defaultXLBinary, c.XL.ArgsAllowlist)
	s.hostname, _ = os.Hostname()
	return s, nil
}

func resolveBackend(name, bin, def string, allow []string) backend {
	b := backend{name: name, allowed: map[string]struct{}{}}
	for _, a := range allow {
		b.allowed[a] = struct{}{}
	}
	if bin == "" {
		bin = def
	}
	p, err := exec.LookPath(bin)
	if err == nil {
		p, err = filepath.Abs(p)
	}
	if err == nil {
		p, err = filepath.EvalSymlinks(p)
	}
	if err != nil {
		b.missing = fmt.Errorf("backend %s unavailable on this node: %q not found: %v", name, bin, err)
		return b
	}
	b.binary = p
	return b
}

func (s *settings) backend(name string) (*backend, error) {
	switch name {
	case BackendQemu:
		return &s.qemu, nil
	case BackendXL:
		return &s.xl, nil
	}
	return nil, fmt.Errorf("backend = %q: must be %q or %q", name, BackendQemu, BackendXL)
}

// validIdent reports whether s is a non-empty [A-Za-z0-9_.-]+ string not starting with '-' or '.'.
func validIdent(s string) bool {
	if s == "" || s[0] == '-' || s[0] == '.' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// sanitizeName maps any string to [A-Za-z0-9_-]{1,maxNameLen}: other characters become '-'.
func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxNameLen {
			break
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		return "task"
	}
	return out
}

// guestName is the qemu -name / xl domain name of a task: nomad-<task>-<alloc id prefix>.
func guestName(taskName, allocID string) string {
	a := sanitizeName(allocID)
	if len(a) > 8 {
		a = a[:8]
	}
	return "nomad-" + sanitizeName(taskName) + "-" + a
}

// checkText rejects non-printable characters, quotes and backslashes (the text lands inside a
// quoted xl config string or a qemu option), and over-long values.
func checkText(key, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%s is %d bytes long: at most %d allowed", key, len(v), max)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' || r == '\'' {
			return fmt.Errorf("%s contains a forbidden character %q (control characters, quotes and backslashes are rejected)", key, r)
		}
	}
	return nil
}

// checkArgs requires every extra argument to be in the backend's args_allowlist exactly.
func checkArgs(b *backend, args []string) error {
	for _, a := range args {
		if _, ok := b.allowed[a]; !ok {
			return fmt.Errorf("args: %q is not in the %s.args_allowlist of the plugin config", a, b.name)
		}
	}
	return nil
}

var errNotAllowed = errors.New("not inside an allowed directory")

// within reports whether path (already symlink-free, absolute) is dir or below it.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// resolveKernel finds the kernel a job names: a relative name in the task's local/ dir (where
// artifacts land) then in image_dirs; an absolute path must resolve (symlinks evaluated) inside
// image_dirs or the task dir. Returns the resolved path of a regular file.
func resolveKernel(kernel, taskDir string, imageDirs []string) (string, error) {
	if kernel == "" {
		return "", errors.New("kernel must be set")
	}
	if strings.ContainsRune(kernel, 0) {
		return "", errors.New("kernel contains a NUL byte")
	}
	realTask, err := filepath.EvalSymlinks(taskDir)
	if err != nil {
		return "", fmt.Errorf("task dir %s: %v", taskDir, err)
	}
	allowed := append([]string{realTask}, imageDirs...)
	check := func(p string) (string, error) {
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			return "", err
		}
		ok := false
		for _, d := range allowed {
			if within(d, r) {
				ok = true
				break
			}
		}
		if !ok {
			return "", fmt.Errorf("kernel %q resolves to %s: %w (the task dir or the plugin's image_dirs %v)",
				kernel, r, errNotAllowed, imageDirs)
		}
		st, err := os.Stat(r)
		if err != nil {
			return "", err
		}
		if !st.Mode().IsRegular() {
			return "", fmt.Errorf("kernel %q resolves to %s: not a regular file", kernel, r)
		}
		return r, nil
	}
	if filepath.IsAbs(kernel) {
		return check(filepath.Clean(kernel))
	}
	clean := filepath.Clean(kernel)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("kernel %q: %w (relative paths may not climb with ..)", kernel, errNotAllowed)
	}
	bases := append([]string{filepath.Join(realTask, "local")}, imageDirs...)
	var firstErr error
	for _, b := range bases {
		r, err := check(filepath.Join(b, clean))
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", fmt.Errorf("kernel %q not found in the task's local/ dir nor in image_dirs %v", kernel, imageDirs)
}
