//go:build !urfave_cli_no_docs

package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// manPage renders baton(1) from app's definitions. It needs urfave/cli's
// doc generators: only builds without -tags urfave_cli_no_docs (the doc
// generator, the tests) have it.
func manPage(app *cli.App) (string, error) {
	man, err := app.ToManWithSection(1)
	if err != nil {
		return "", fmt.Errorf("man page: %w", err)
	}
	return man, nil
}
