package main

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts only ask baton: with EnableBashCompletion, the
// command line followed by --generate-bash-completion prints the commands or
// flags that fit (urfave/cli), so they cannot drift from the definitions.
var (
	//go:embed completion/baton.bash
	bashCompletion string
	//go:embed completion/baton.zsh
	zshCompletion string
)

// completionShells are the shells `baton completion` knows.
const completionShells = "bash, zsh or fish"

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "bash:  source <(baton completion bash), or save it as /usr/share/bash-completion/completions/baton\n" +
			"zsh:   save it as _baton in a directory of $fpath\n" +
			"fish:  baton completion fish > ~/.config/fish/completions/baton.fish\n" +
			"The .deb and .rpm install all three.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("completion: want one shell: %s", completionShells)
			}
			script, err := completionScript(c.App, c.Args().First())
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}

// completionScript is the completion script for shell.
func completionScript(app *cli.App, shell string) (string, error) {
	switch shell {
	case "bash":
		return bashCompletion, nil
	case "zsh":
		return zshCompletion, nil
	case "fish":
		return fishCompletion(app)
	}
	return "", usagef("completion: unknown shell %q: want %s", shell, completionShells)
}

// fishCompletion is urfave/cli's fish script for app without its repeated
// lines: once the app is set up, the help and version flags are among its
// visible flags and are also added on their own.
func fishCompletion(app *cli.App) (string, error) {
	script, err := app.ToFishCompletion()
	if err != nil {
		return "", fmt.Errorf("completion: fish: %w", err)
	}
	seen := map[string]bool{}
	var b strings.Builder
	for line := range strings.Lines(script) {
		if strings.HasPrefix(line, "complete ") {
			if seen[line] {
				continue
			}
			seen[line] = true
		}
		b.WriteString(line)
	}
	return b.String(), nil
}
