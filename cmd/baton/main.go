// Command baton is a zero-downtime reload supervisor for reverse proxies.
// See README.md and docs/ for the command line.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/batonproxy/baton/internal/proc"
)

// homepage is where the documentation lives.
const homepage = "https://github.com/batonproxy/baton"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses (docs/design.md, "Exit status"): the contract scripts depend on.
const (
	exitOK        = 0
	exitFailed    = 1 // the operation failed; the old generation still serves
	exitUsage     = 2
	exitNoBaton   = 3 // nobody answers on the control socket
	exitShimError = 127
)

// usageError is bad command-line input.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errNoBaton wraps failures to reach a supervisor.
var errNoBaton = errors.New("no baton answering")

func main() {
	if proc.IsExecShim(os.Args) {
		err := proc.RunExecShim(os.Args)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitShimError)
	}
	if len(os.Args) > 1 && os.Args[1] == "run" {
		survivePipeClose() // the init and the supervisor alike
	}
	if runsAsInit(os.Args) {
		os.Exit(initMain(os.Args, os.Stderr))
	}
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	notFound := false
	app.CommandNotFound = func(c *cli.Context, name string) {
		notFound = true
		fmt.Fprintf(c.App.ErrWriter, "baton: unknown command %q (try baton --help)\n", name)
	}
	err := app.Run(args)
	if notFound {
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "baton: %v\n", err)
	return exitCode(err)
}

func exitCode(err error) int {
	var ue usageError
	var ec cli.ExitCoder
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, errNoBaton):
		return exitNoBaton
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return exitFailed
}

func newApp(stdout, stderr io.Writer) *cli.App {
	onUsage := func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	app := &cli.App{
		Name:  "baton",
		Usage: "zero-downtime reload supervisor for HAProxy, nginx and socket-activated servers",
		Description: "baton binds every listening socket once and hands the same sockets to each new generation of\n" +
			"the proxy: HAProxy through -x (_getsocks), nginx through NGINX, others through LISTEN_FDS.\n" +
			"A reload returns once the new generation alone holds them; older generations drain and are\n" +
			"stopped at their deadline. Documentation: " + homepage + "\n",
		Version:        buildVersion(),
		Writer:         stdout,
		ErrWriter:      stderr,
		OnUsageError:   onUsage,
		ExitErrHandler: func(*cli.Context, error) {}, // exit codes are ours
		// Bare `baton` is a usage error: the help goes to stderr, and the
		// exit status is 2 (`baton --help` prints it on stdout, status 0).
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q (try baton --help)", c.Args().First())
			}
			cli.HelpPrinter(c.App.ErrWriter, cli.AppHelpTemplate, c.App)
			return usagef("no command given")
		},
		// `baton ... --generate-bash-completion` lists the commands or
		// flags that fit: what the bash and zsh completion scripts ask.
		EnableBashCompletion: true,
		Commands: append([]*cli.Command{
			runCommand(), checkCommand(), reloadCommand(), statusCommand(), stopCommand(), upgradeCommand(), doctorCommand(),
			completionCommand(), versionCommand(),
		}, docCommands()...),
	}
	for _, c := range app.Commands {
		c.OnUsageError = onUsage
	}
	return app
}

func buildVersion() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print baton's version (the same as baton --version and baton -v)",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("version: unexpected argument %q", c.Args().First())
			}
			cli.ShowVersion(c)
			return nil
		},
	}
}
