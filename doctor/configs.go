package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// DefaultNginxConf is where nginx reads its configuration without -c
// (Debian's and upstream's packages).
const DefaultNginxConf = "/etc/nginx/nginx.conf"

// haproxyPaths returns the -f paths (files or directories) of an HAProxy
// command line, and those after "--", resolved against -C or cwd.
func haproxyPaths(args []string, cwd string) []string {
	dir := cwd
	for i, a := range args {
		if a == "-C" && i+1 < len(args) {
			dir = abs(args[i+1], cwd)
		}
	}
	var out []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "-f" && i+1 < len(args):
			i++
			out = append(out, abs(args[i], dir))
		case args[i] == "--":
			for _, a := range args[i+1:] {
				out = append(out, abs(a, dir))
			}
			return out
		}
	}
	return out
}

// nginxArgs reads -c, -p and -g from an nginx command line, which may be a
// master's rewritten title ("nginx: master process /usr/sbin/nginx -c
// CONF -g ..."). The configuration path is resolved against the prefix
// (-p) as nginx does; a relative one without -p cannot be resolved here
// (nginx uses its compiled-in prefix): ok is false.
func nginxArgs(cmdline []string) (conf, globals string, ok bool) {
	args := cmdline
	if len(cmdline) == 1 {
		title := cmdline[0]
		if _, rest, found := strings.Cut(title, "master process "); found {
			title = rest
		}
		if g, after, found := strings.Cut(title, " -g "); found {
			title, globals = g, strings.TrimSpace(after)
		}
		args = strings.Fields(title)
	}
	if len(args) > 0 {
		args = args[1:]
	}
	var prefix string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' || !strings.ContainsRune("cpg", rune(a[1])) {
			continue
		}
		val := a[2:]
		if val == "" && i+1 < len(args) {
			i++
			val = args[i]
		}
		switch a[1] {
		case 'c':
			conf = val
		case 'p':
			prefix = val
		case 'g':
			globals = strings.TrimSpace(globals + " " + val)
		}
	}
	switch {
	case conf == "":
		conf = DefaultNginxConf
	case !filepath.IsAbs(conf) && prefix == "":
		return conf, globals, false
	case !filepath.IsAbs(conf):
		conf = filepath.Join(prefix, conf)
	}
	return conf, globals, true
}

// readHAProxy reads HAProxy's configuration files with read: each path, or
// each *.cfg file of a directory in lexical order, as HAProxy does.
func readHAProxy(paths []string, read func(string) ([]byte, error)) ([]ConfigFile, error) {
	var out []ConfigFile
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		files := []string{p}
		if st.IsDir() {
			files, _ = filepath.Glob(filepath.Join(p, "*.cfg"))
			sort.Strings(files)
		}
		for _, f := range files {
			data, err := read(f)
			if err != nil {
				return out, err
			}
			out = append(out, ConfigFile{Path: f, Text: string(data)})
		}
	}
	return out, nil
}

// nginxIncludeLimit bounds the files one nginx configuration may pull in.
const nginxIncludeLimit = 256

// readNginx reads an nginx configuration and every file it includes
// (globs expanded, relative paths taken from the main file's directory, as
// nginx does) with read, each once. An include read refuses (not a regular
// file, too large) fails it; a missing or unreadable one is nginx's
// business.
func readNginx(main string, read func(string) ([]byte, error)) ([]ConfigFile, error) {
	dir := filepath.Dir(main)
	var out []ConfigFile
	seen := map[string]bool{}
	queue := []string{main}
	for len(queue) > 0 && len(out) < nginxIncludeLimit {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		data, err := read(p)
		if err != nil {
			if p == main || errors.Is(err, errNotRegular) || errors.Is(err, errTooLarge) {
				return nil, err
			}
			continue // nginx would refuse it; not doctor's business
		}
		out = append(out, ConfigFile{Path: p, Text: string(data)})
		ds, err := nginxDirectives(string(data))
		if err != nil {
			return out, fmt.Errorf("%s:%w", p, err)
		}
		for _, d := range ds {
			if d.Name != "include" || len(d.Args) == 0 {
				continue
			}
			pattern := abs(d.Args[0], dir)
			matches, _ := filepath.Glob(pattern)
			sort.Strings(matches)
			queue = append(queue, matches...)
		}
	}
	return out, nil
}

// sourceKey identifies a configuration so that one used by several
// processes is read and reported once.
func (c ProxyConfig) key() string {
	var paths []string
	for _, f := range c.Files {
		paths = append(paths, f.Path)
	}
	return c.Program + "\x00" + strings.Join(paths, "\x00") + "\x00" + c.Globals
}

// mergeConfigs folds configurations read from several processes into one
// each, pids merged.
func mergeConfigs(in []ProxyConfig) []ProxyConfig {
	var out []ProxyConfig
	at := map[string]int{}
	for _, c := range in {
		k := c.key()
		if i, ok := at[k]; ok {
			for _, p := range c.Pids {
				if !slices.Contains(out[i].Pids, p) {
					out[i].Pids = append(out[i].Pids, p)
				}
			}
			for _, p := range c.Ports {
				if !slices.Contains(out[i].Ports, p) {
					out[i].Ports = append(out[i].Ports, p)
				}
			}
			if out[i].Baton == "" {
				out[i].Baton = c.Baton
			}
			continue
		}
		at[k] = len(out)
		out = append(out, c)
	}
	for i := range out {
		sort.Ints(out[i].Pids)
		sort.Ints(out[i].Ports)
	}
	return out
}
