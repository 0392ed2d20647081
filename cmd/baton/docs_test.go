//go:build !urfave_cli_no_docs

package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batonproxy/baton/batontest"
)

// documented lists every visible command with its visible flags' long
// names: what the man page and the completions must name.
func documented(t *testing.T) map[string][]string {
	t.Helper()
	app := newApp(io.Discard, io.Discard)
	app.Setup()
	cmds := map[string][]string{}
	for _, c := range app.VisibleCommands() {
		if c.Name == "help" {
			continue
		}
		var flags []string
		for _, f := range c.VisibleFlags() {
			if n := f.Names()[0]; n != "help" {
				flags = append(flags, n)
			}
		}
		cmds[c.Name] = flags
	}
	if len(cmds) < 8 || len(cmds["run"]) < 20 {
		t.Fatalf("only %d commands, run with %d flags: %v", len(cmds), len(cmds["run"]), cmds)
	}
	return cmds
}

// TestManPageAndCompletionsNameEveryCommandAndFlag guards that the generated
// man page and the completions cannot drift from the definitions: each
// names every command and every flag.
func TestManPageAndCompletionsNameEveryCommandAndFlag(t *testing.T) {
	cmds := documented(t)
	man, err := manPage(newApp(io.Discard, io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	fish, err := completionScript(newApp(io.Discard, io.Discard), "fish")
	if err != nil {
		t.Fatal(err)
	}
	for name, flags := range cmds {
		if !strings.Contains(man, "\n.SH "+name+"\n") {
			t.Errorf("man page: no section for %q", name)
		}
		if !strings.Contains(fish, "-a '"+name+"'") {
			t.Errorf("fish: no completion of command %q", name)
		}
		got := askCompletion(t, "--generate-bash-completion")
		if !strings.Contains("\n"+got, "\n"+name+"\n") {
			t.Errorf("bash/zsh: %q not among the commands: %q", name, got)
		}
		listed := askCompletion(t, name, "-", "--generate-bash-completion")
		for _, f := range flags {
			if !strings.Contains(man, `\fB--`+f) {
				t.Errorf("man page: %s: no --%s", name, f)
			}
			if !strings.Contains(fish, "__fish_seen_subcommand_from "+name+"' -f -l "+f+" ") {
				t.Errorf("fish: %s: no --%s", name, f)
			}
			if !strings.Contains("\n"+listed, "\n--"+f+"\n") {
				t.Errorf("bash/zsh: %s: --%s not listed: %q", name, f, listed)
			}
		}
	}
	if strings.Contains(man, "gen-docs") || strings.Contains(fish, "gen-docs") {
		t.Error("the doc generator's own command is documented")
	}
}

// askCompletion is what `baton ARGS...` prints, with os.Args set as a shell
// would (urfave/cli reads the word being completed from os.Args).
func askCompletion(t *testing.T, args ...string) string {
	t.Helper()
	argv := append([]string{"baton"}, args...)
	saved := os.Args
	os.Args = argv
	defer func() { os.Args = saved }()
	var out, errb bytes.Buffer
	if code := run(argv, &out, &errb); code != 0 {
		t.Fatalf("%v: exit %d: %s", argv, code, errb.String())
	}
	return out.String()
}

// TestBashCompletesCommandsAndFlags sources `baton completion bash` into a
// real bash and completes as the TAB key would: command names, a command's
// flags (also from a bare `--`, which must never reach baton as `--`: baton
// would run the command), and file names (not baton's words) after `--`.
func TestBashCompletesCommandsAndFlags(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	bin := filepath.Join(t.TempDir(), "baton")
	if err := os.Symlink(batontest.BatonBinary(t), bin); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"baton", "re"}, "reload"},
		{[]string{"baton", "st"}, "status stop"},
		{[]string{"baton", "completion", "-"}, "--help -h"},
		{[]string{"baton", "reload", "--ti"}, "--timeout"},
		{[]string{"baton", "run", "--drain-"}, "--drain-timeout --drain-signal"},
		{[]string{"baton", "stop", "--"}, "--control --fast --help"},
		{[]string{"baton", "run", "--", "re"}, ""},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.words, " "), func(t *testing.T) {
			script := `source <("$BATON" completion bash)
COMP_WORDS=(` + strings.Join(c.words, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_WORDS[0]=$BATON
_baton; echo "${COMPREPLY[*]}"`
			cmd := exec.Command(bash, "--norc", "--noprofile", "-c", script)
			cmd.Env = append(os.Environ(), "BATON="+bin)
			cmd.Dir = t.TempDir()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v: %s", err, out)
			}
			got, want := strings.Fields(string(out)), strings.Fields(c.want)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("completes to %q, want %q", got, want)
			}
		})
	}
}
