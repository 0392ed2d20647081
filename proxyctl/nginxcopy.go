package proxyctl

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// nginxCopyDir is the directory, inside a generation's directory, that holds
// the copy of the main config file the generation runs, beside a symlink to
// every other entry of the original file's directory.
const nginxCopyDir = "nginx-conf"

// nginxPid is what baton needs to know of the main file's top-level pid
// directive.
type nginxPid struct {
	path     string // its argument as written; "" when there is none
	line     int
	off, end int // byte span of the argument
}

// findNginxPid finds the top-level pid directive of one nginx file, with the
// byte span of its argument. Only the first one counts (nginx refuses a
// second as a duplicate).
func findNginxPid(text string) (nginxPid, error) {
	toks, err := lexNginx(text)
	if err != nil {
		return nginxPid{}, err
	}
	depth, first := 0, true
	for i, t := range toks {
		switch t.punct {
		case '{':
			depth++
			first = true
			continue
		case '}':
			depth = max(depth-1, 0)
			first = true
			continue
		case ';':
			first = true
			continue
		}
		isPid := first && depth == 0 && t.text == "pid"
		first = false
		if !isPid {
			continue
		}
		if i+2 >= len(toks) || toks[i+1].punct != 0 || toks[i+2].punct != ';' {
			return nginxPid{}, fmt.Errorf("%d: pid takes one argument", t.line)
		}
		a := toks[i+1]
		return nginxPid{path: a.text, line: t.line, off: a.off, end: a.end}, nil
	}
	return nginxPid{}, nil
}

// nginxWord writes s as one nginx token: bare when it holds nothing nginx
// would split or interpret, else double-quoted with backslash escapes.
func nginxWord(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\r\n;{}\"'\\#$") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// rewriteNginxPid returns text with the argument of its top-level pid
// directive replaced by pidPath, and the argument it replaced ("" when the
// file has no pid directive: then text comes back unchanged). Nothing else
// moves: every other byte, and so every line number, stays.
func rewriteNginxPid(text, pidPath string) (string, nginxPid, error) {
	p, err := findNginxPid(text)
	if err != nil || p.path == "" {
		return text, p, err
	}
	return text[:p.off] + nginxWord(pidPath) + text[p.end:], p, nil
}

// stageNginxConf writes what generation g runs for the main config file
// orig (whose content, as checked, is in src): in dir, a copy whose pid
// directive (if any) names g's own pid file, and a symlink to every other
// entry of orig's directory, so that paths nginx resolves against the
// directory of its -c file (relative includes, certificates) still reach
// the user's files. It returns the copy's path and the user's pid path.
func stageNginxConf(orig, src, dir, pidPath string) (string, nginxPid, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return "", nginxPid{}, err
	}
	text, pid, err := rewriteNginxPid(string(data), pidPath)
	if err != nil {
		return "", nginxPid{}, fmt.Errorf("%s:%w", orig, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", nginxPid{}, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nginxPid{}, err
	}
	origDir, base := filepath.Dir(orig), filepath.Base(orig)
	entries, err := os.ReadDir(origDir)
	if err != nil {
		return "", nginxPid{}, err
	}
	for _, e := range entries {
		if e.Name() == base {
			continue
		}
		if err := os.Symlink(filepath.Join(origDir, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return "", nginxPid{}, err
		}
	}
	copyPath := filepath.Join(dir, base)
	if err := os.WriteFile(copyPath, []byte(text), 0o600); err != nil {
		return "", nginxPid{}, err
	}
	return copyPath, pid, nil
}

// nginxPaths works out what nginx resolves for args as it does: the main
// config file (-c, relative to the prefix; else the compiled-in
// --conf-path) and the prefix (-p, else the compiled-in --prefix). What is
// compiled in comes from `nginx -V`, run only when needed.
func nginxPaths(bin string, args []string) (conf, prefix string, err error) {
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-c":
			conf = args[i+1]
		case "-p":
			prefix = args[i+1]
		}
	}
	if prefix == "" || conf == "" {
		built, err := nginxBuild(bin)
		if err != nil {
			return "", "", err
		}
		if prefix == "" {
			prefix = built.prefix
		}
		if conf == "" {
			conf = built.conf
		}
	}
	if !filepath.IsAbs(conf) {
		conf = filepath.Join(prefix, conf)
	}
	if !filepath.IsAbs(conf) {
		return "", "", fmt.Errorf("nginx config file %s: not an absolute path", conf)
	}
	return conf, prefix, nil
}

// nginxDefaults are nginx's compiled-in paths.
type nginxDefaults struct{ prefix, conf string }

// nginxBuild reads the compiled-in prefix and config path from `nginx -V`
// (configure's defaults when it names none: /usr/local/nginx and
// conf/nginx.conf). It waits for its child with os/exec, which is safe only
// because NewNginx runs before baton's reaper (wait4(-1)) starts: later
// commands go through the supervisor's starter.
func nginxBuild(bin string) (nginxDefaults, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-V")
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nginxDefaults{}, fmt.Errorf("%s -V: %w", bin, err)
	}
	d := nginxDefaults{prefix: "/usr/local/nginx", conf: "conf/nginx.conf"}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "--prefix="); ok {
			d.prefix = v
		}
		if v, ok := strings.CutPrefix(f, "--conf-path="); ok {
			d.conf = v
		}
	}
	return d, nil
}
