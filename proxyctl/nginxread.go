package proxyctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxNginxRead bounds what readNginxConfig reads in all, as the check
// command's output is bounded.
const maxNginxRead = 64 << 20

// maxNginxInclude bounds the nesting of include directives: deeper (a file
// that includes itself) is left to nginx, which reports it.
const maxNginxInclude = 32

// errNginxRead is wrapped by the reasons readNginxConfig gives up.
var errNginxRead = errors.New("nginx config not read by baton")

// readNginxConfig reads the main config file and every file it includes,
// as nginx does, and returns them as `nginx -T` dumps them: each file once,
// in the order nginx opens them, after a "# configuration file PATH:"
// line. An include's relative path is resolved against the main file's
// directory (nginx's conf prefix); a pattern with *, ? or [ is a glob(3)
// (sorted, no match allowed, a leading dot matched only by a dot); a plain
// path must exist. Any file it cannot read (missing, not a regular file, too
// big in all, nested too deep) is an error: the caller then runs nginx -T,
// so that the user sees nginx's own message.
func readNginxConfig(main string) (string, error) {
	r := nginxReader{prefix: filepath.Dir(main), seen: map[string]bool{}}
	if err := r.visit(main, 0); err != nil {
		return "", err
	}
	return r.out.String(), nil
}

type nginxReader struct {
	prefix string
	seen   map[string]bool
	out    strings.Builder
}

func (r *nginxReader) visit(path string, depth int) error {
	if depth > maxNginxInclude {
		return fmt.Errorf("%w: includes nested deeper than %d at %s", errNginxRead, maxNginxInclude, path)
	}
	if r.seen[path] {
		return nil
	}
	r.seen[path] = true
	text, err := r.read(path)
	if err != nil {
		return err
	}
	r.out.WriteString(dumpFileHeader + path + ":\n")
	r.out.WriteString(text)
	if !strings.HasSuffix(text, "\n") {
		r.out.WriteByte('\n')
	}
	r.out.WriteByte('\n')
	incs, err := parseNginxText(path, text, func(name string) bool { return name == "include" })
	if err != nil {
		return fmt.Errorf("%w: %w", errNginxRead, err)
	}
	for _, d := range incs {
		if len(d.Args) != 1 {
			return fmt.Errorf("%w: %s: include takes one argument", errNginxRead, d.where())
		}
		files, err := r.resolve(d.Args[0])
		if err != nil {
			return fmt.Errorf("%w: %s: %w", errNginxRead, d.where(), err)
		}
		for _, f := range files {
			if err := r.visit(f, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// read reads one regular file within what is left of the bound.
func (r *nginxReader) read(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNginxRead, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNginxRead, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", errNginxRead, path)
	}
	left := int64(maxNginxRead - r.out.Len())
	b, err := io.ReadAll(io.LimitReader(f, left+1))
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNginxRead, err)
	}
	if int64(len(b)) > left {
		return "", fmt.Errorf("%w: more than %d MiB of configuration", errNginxRead, maxNginxRead>>20)
	}
	return string(b), nil
}

// resolve maps an include argument to the files nginx reads for it.
func (r *nginxReader) resolve(arg string) ([]string, error) {
	p := arg
	if !filepath.IsAbs(p) {
		p = filepath.Join(r.prefix, p)
	}
	if !strings.ContainsAny(arg, "*?[") {
		return []string{p}, nil
	}
	matches, err := filepath.Glob(p)
	if err != nil {
		return nil, err
	}
	out := matches[:0]
	for _, m := range matches {
		if !hiddenMatch(p, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// hiddenMatch reports whether match has a component starting with a dot
// where pattern's component does not: glob(3), unlike filepath.Glob, does
// not match a leading dot with a wildcard.
func hiddenMatch(pattern, match string) bool {
	pc := strings.Split(pattern, "/")
	mc := strings.Split(match, "/")
	if len(pc) != len(mc) {
		return false
	}
	for i := range mc {
		if strings.HasPrefix(mc[i], ".") && !strings.HasPrefix(pc[i], ".") {
			return true
		}
	}
	return false
}

// ConfigDump implements StartChecks: the files of the generation's copy
// (or, without one, of the original), read by baton in nginx -T's format.
func (n *Nginx) ConfigDump(g GenSpec) (string, error) {
	if n.pathErr != nil {
		return "", fmt.Errorf("%w: %w", errNginxRead, n.pathErr)
	}
	main := n.conf
	if n.staged(g) {
		main = n.stagedPath(g)
	}
	return readNginxConfig(main)
}

// ConfigDump implements StartChecks: HAProxy's checks read no output.
func (h *HAProxy) ConfigDump(GenSpec) (string, error) { return "", nil }
