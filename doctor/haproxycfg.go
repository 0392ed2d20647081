package doctor

import (
	"fmt"
	"strings"
)

// haproxyConf is what doctor reads of an HAProxy configuration.
type haproxyConf struct {
	// hardStop and closeSpread say where hard-stop-after and
	// close-spread-time are set ("" when not).
	hardStop, closeSpread string
	proxies               []haproxyProxy
}

// haproxyProxy is one frontend or listen section with the settings it ends
// up with once its defaults section is applied.
type haproxyProxy struct {
	kind, name, where string
	mode              string // "tcp" unless set
	idleClose         bool   // option idle-close-on-response in effect
}

// haproxySettings are the inheritable settings of a defaults section.
type haproxySettings struct {
	mode      string
	idleClose *bool
}

func (s haproxySettings) apply(line []string) haproxySettings {
	switch {
	case len(line) >= 2 && line[0] == "mode":
		s.mode = line[1]
	case len(line) >= 2 && line[0] == "option" && line[1] == "idle-close-on-response":
		on := true
		s.idleClose = &on
	case len(line) >= 3 && line[0] == "no" && line[1] == "option" && line[2] == "idle-close-on-response":
		off := false
		s.idleClose = &off
	}
	return s
}

// haproxySections are the keywords that start a section.
var haproxySections = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"resolvers": true, "peers": true, "userlist": true, "program": true, "http-errors": true,
	"ring": true, "cache": true, "mailers": true, "fcgi-app": true, "crt-store": true,
	"log-forward": true, "traces": true,
}

// parseHAProxy reads the files in order, as HAProxy concatenates them: a
// proxy takes the defaults section named by its `from`, else the last one
// before it; a defaults section starts from HAProxy's built-in settings
// unless it names another with `from`.
func parseHAProxy(files []ConfigFile) haproxyConf {
	var c haproxyConf
	named := map[string]haproxySettings{}
	var last haproxySettings
	var section, defName string
	var cur *haproxyProxy
	var curSet haproxySettings
	closeProxy := func() {
		if cur != nil {
			cur.mode = curSet.mode
			if cur.mode == "" {
				cur.mode = "tcp"
			}
			cur.idleClose = curSet.idleClose != nil && *curSet.idleClose
			c.proxies = append(c.proxies, *cur)
			cur = nil
		}
		if section == "defaults" {
			last = curSet
			if defName != "" {
				named[defName] = curSet
			}
		}
	}
	for _, f := range files {
		for i, raw := range strings.Split(f.Text, "\n") {
			line := haproxyWords(raw)
			if len(line) == 0 {
				continue
			}
			where := fmt.Sprintf("%s:%d", f.Path, i+1)
			if haproxySections[line[0]] {
				closeProxy()
				section, defName = line[0], ""
				from, hasFrom := fromClause(line)
				base := last
				if hasFrom {
					base = named[from]
				}
				switch section {
				case "defaults":
					if len(line) >= 2 && line[1] != "from" {
						defName = line[1]
					}
					curSet = haproxySettings{} // a defaults section starts afresh
					if hasFrom {
						curSet = base
					}
				case "frontend", "listen":
					name := ""
					if len(line) >= 2 {
						name = line[1]
					}
					cur = &haproxyProxy{kind: section, name: name, where: where}
					curSet = base
				}
				continue
			}
			switch section {
			case "global":
				switch line[0] {
				case "hard-stop-after":
					c.hardStop = where
				case "close-spread-time":
					c.closeSpread = where
				}
			case "defaults", "frontend", "listen":
				curSet = curSet.apply(line)
			}
		}
	}
	closeProxy()
	return c
}

// fromClause finds "from NAME" in a section line.
func fromClause(line []string) (string, bool) {
	for i := 1; i+1 < len(line); i++ {
		if line[i] == "from" {
			return line[i+1], true
		}
	}
	return "", false
}

// haproxyWords splits a line into words, dropping a comment (a word that
// starts with '#').
func haproxyWords(line string) []string {
	ws := strings.Fields(line)
	for i, w := range ws {
		if strings.HasPrefix(w, "#") {
			return ws[:i]
		}
	}
	return ws
}
