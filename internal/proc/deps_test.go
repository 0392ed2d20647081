package proc

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBottomLayer: internal/proc is below every other package of baton and
// imports none of them (the supervisor, the drivers, doctor and the test helpers
// import it).
func TestBottomLayer(t *testing.T) {
	const pkg = "github.com/batonproxy/baton/internal/proc"
	out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/batonproxy/baton/") && dep != pkg {
			t.Errorf("%s imports %s", pkg, dep)
		}
	}
}
