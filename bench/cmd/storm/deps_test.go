package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCommandsDoNotLinkTesting guards the split between batontest and
// internal/testbed: storm run is for users, and neither it nor baton may
// carry the testing package (and its flags) into the binary.
func TestCommandsDoNotLinkTesting(t *testing.T) {
	for _, pkg := range []string{"github.com/batonproxy/baton/bench/cmd/storm", "github.com/batonproxy/baton/cmd/baton"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == "testing" || strings.HasSuffix(dep, "/batontest") {
				t.Errorf("%s links %s", pkg, dep)
			}
		}
	}
}
