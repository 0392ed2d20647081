//go:build batondocs

package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
)

// docCommands adds `baton gen-docs DIR` to the doc generator build
// (`go run -tags batondocs ./cmd/baton gen-docs DIR`, scripts/dist): the man
// page needs urfave/cli's doc generators, which the baton binary leaves out
// (-tags urfave_cli_no_docs) to start faster.
func docCommands() []*cli.Command {
	return []*cli.Command{{
		Name:      "gen-docs",
		Usage:     "write baton.1 and the bash, zsh and fish completions into DIR",
		ArgsUsage: "DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("gen-docs: want one directory")
			}
			return writeDocs(c.App, c.Args().First())
		},
	}}
}

// writeDocs writes the man page and the completion scripts generated from
// app's definitions into dir.
func writeDocs(app *cli.App, dir string) error {
	man, err := manPage(app)
	if err != nil {
		return err
	}
	files := map[string]string{"baton.1": man}
	for shell, name := range map[string]string{"bash": "baton.bash", "zsh": "_baton", "fish": "baton.fish"} {
		if files[name], err = completionScript(app, shell); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gen-docs: %w", err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("gen-docs: %w", err)
		}
	}
	return nil
}
