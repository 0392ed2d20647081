package internal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// module is baton's module path; the rules below name packages relative to
// it.
const module = "github.com/batonproxy/baton"

// layers are baton's layers, top first, by path prefix: a package imports
// only from its own layer or a lower one. api, the wire types, is below
// them all and imports nothing of baton's. The prefixes hold whatever
// packages a layer grows (internal/ has any number).
var layers = []string{"cmd/baton", "doctor", "supervisor", "proxyctl", "fdpass", "internal", "api"}

// testSide are the packages for tests, benchmarks and examples: they may
// import any layer, and no layer imports them.
var testSide = []string{"batontest", "bench/", "integration", "examples/"}

// testOnly are the test-side packages only tests import.
var testOnly = []string{"batontest", "integration"}

// binaries are where the commands users run live (baton, the bench's storm
// run, the example servers): no main package there may link the testing
// package (and its flags) or a package only tests import.
var binaries = []string{"cmd/baton", "bench/cmd/", "examples/"}

// lifecycle is the pure machine: no process, file, socket or logger, and
// no clock but the time its events carry.
const lifecycle = "supervisor/lifecycle"

var (
	lifecycleBanned  = []string{"os", "os/exec", "os/signal", "syscall", "net", "golang.org/x/sys/unix", "go.uber.org/zap"}
	lifecycleNoClock = []string{"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "NewTimer", "NewTicker", "Tick"}
)

// pkg is what the test reads of `go list -json`.
type pkg struct {
	ImportPath   string
	Name         string
	Dir          string
	GoFiles      []string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
}

// TestImportDirection fails when a package imports one above it, when a
// layer imports a test-side package, when api imports anything of baton's,
// or when a package fits no rule (a new top-level package must be placed).
func TestImportDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := relPath(p.ImportPath)
		if rank(rel) < 0 && !isTestSide(rel) {
			t.Errorf("%s is in no layer and not test-side: add its path to layers or testSide in internal/layers_test.go", rel)
			continue
		}
		for _, imp := range p.Imports {
			if why := forbidden(rel, imp, false); why != "" {
				t.Errorf("%s imports %s: %s", rel, relPath(imp), why)
			}
		}
		for _, imp := range slices.Concat(p.TestImports, p.XTestImports) {
			if why := forbidden(rel, imp, true); why != "" {
				t.Errorf("tests of %s import %s: %s", rel, relPath(imp), why)
			}
		}
	}
}

// TestCommandsDoNotLinkTesting guards the split between batontest and
// internal/testbed: storm run is for users, and neither it nor baton may
// carry the testing package (and its flags) or batontest into the binary.
func TestCommandsDoNotLinkTesting(t *testing.T) {
	n := 0
	for _, p := range listPackages(t) {
		rel := relPath(p.ImportPath)
		if !hasPrefix(rel, binaries) || p.Name != "main" {
			continue
		}
		n++
		for _, dep := range p.Deps {
			if dep == "testing" || (strings.HasPrefix(dep, module+"/") && hasPrefix(relPath(dep), testOnly)) {
				t.Errorf("%s links %s", rel, dep)
			}
		}
	}
	if n == 0 {
		t.Fatalf("no package matches %v: the list of binaries is stale", binaries)
	}
}

// TestLifecycleIsPure: the lifecycle machine imports no os, os/exec,
// syscall, net or zap, nothing of baton's but api, and reads no clock
// (time.Time and time.Duration are fine).
func TestLifecycleIsPure(t *testing.T) {
	var lc *pkg
	for _, p := range listPackages(t) {
		if relPath(p.ImportPath) == lifecycle {
			lc = &p
		}
	}
	if lc == nil {
		t.Fatalf("%s not found", lifecycle)
	}
	for _, imp := range lc.Imports {
		if slices.Contains(lifecycleBanned, imp) || hasPrefix(imp, []string{"net/", "go.uber.org/zap/"}) {
			t.Errorf("%s imports %s", lifecycle, imp)
		}
		if strings.HasPrefix(imp, module+"/") && relPath(imp) != "api" {
			t.Errorf("%s imports %s: the machine imports nothing of baton's but api", lifecycle, relPath(imp))
		}
	}
	fset := token.NewFileSet()
	for _, name := range lc.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join(lc.Dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		timeName := importName(f, "time")
		if timeName == "" {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == timeName && slices.Contains(lifecycleNoClock, sel.Sel.Name) {
				t.Errorf("%s: %s reads the clock: the time comes with the events", fset.Position(sel.Pos()), "time."+sel.Sel.Name)
			}
			return true
		})
	}
}

// forbidden says why from (relative to the module) may not import imp,
// or "" when it may. inTest: the import is from from's tests, which may
// also use test-side packages.
func forbidden(from, imp string, inTest bool) string {
	if !inTest && hasPrefix(from, []string{"api"}) && !isStd(imp) {
		return "api imports only the standard library"
	}
	if !strings.HasPrefix(imp, module+"/") {
		return "" // the standard library or a dependency
	}
	if !inTest && hasPrefix(from, []string{"fdpass"}) && !hasPrefix(relPath(imp), []string{"fdpass"}) {
		return "fdpass is mechanism only: it imports nothing of baton's"
	}
	to := relPath(imp)
	switch {
	case hasPrefix(from, []string{"api"}):
		return "api imports nothing of baton's"
	case hasPrefix(to, testOnly):
		if inTest || hasPrefix(from, testOnly) {
			return ""
		}
		return "only tests import " + to
	case isTestSide(to):
		if inTest || isTestSide(from) {
			return ""
		}
		return to + " is test-side: no layer imports it"
	case isTestSide(from):
		return ""
	case rank(to) < 0:
		return to + " is in no layer"
	case rank(to) < rank(from):
		return "it is above " + from + " (order: " + strings.Join(layers, " → ") + ")"
	}
	return ""
}

// rank is the index of rel's layer in layers (0 the top), -1 for none.
func rank(rel string) int {
	for i, l := range layers {
		if hasPrefix(rel, []string{l}) {
			return i
		}
	}
	return -1
}

func isTestSide(rel string) bool { return hasPrefix(rel, testSide) }

// isStd: imp is a standard-library package (no dot in its first element).
func isStd(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}

// hasPrefix: rel is one of prefixes, or under it. A prefix ending in "/"
// is a directory whose packages match, not itself.
func hasPrefix(rel string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasSuffix(p, "/") {
			if strings.HasPrefix(rel, p) {
				return true
			}
		} else if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

func relPath(importPath string) string {
	return strings.TrimPrefix(importPath, module+"/")
}

// importName is the name file f gives the package path, "" if it does not
// import it.
func importName(f *ast.File, path string) string {
	for _, s := range f.Imports {
		if p, _ := strconv.Unquote(s.Path.Value); p == path {
			if s.Name != nil {
				return s.Name.Name
			}
			return filepath.Base(path)
		}
	}
	return ""
}

// listPackages is every package of the module, as `go list -json` sees
// it on this platform.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no package")
	}
	return pkgs
}
