package doctor

import (
	"fmt"

	"github.com/batonproxy/baton/proxyctl"
)

// nginxDirectives reads one nginx file with proxyctl's parser (the one
// baton's own nginx check uses).
func nginxDirectives(text string) ([]proxyctl.NginxDirective, error) {
	return proxyctl.ParseNginxFile("", text)
}

// nginxSetting finds the first directive named name in a configuration's
// files, then in its -g globals: where it is ("FILE:LINE" or "-g") and its
// arguments.
func nginxSetting(c ProxyConfig, name string) (where string, args []string, found bool) {
	for _, f := range c.Files {
		ds, err := nginxDirectives(f.Text)
		if err != nil {
			continue
		}
		for _, d := range ds {
			if d.Name == name {
				return fmt.Sprintf("%s:%d", f.Path, d.Line), d.Args, true
			}
		}
	}
	if ds, err := nginxDirectives(c.Globals); err == nil {
		for _, d := range ds {
			if d.Name == name {
				return "-g", d.Args, true
			}
		}
	}
	return "", nil, false
}
