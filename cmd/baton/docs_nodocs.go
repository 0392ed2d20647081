//go:build !batondocs

package main

import "github.com/urfave/cli/v2"

// docCommands is empty in the baton binary: gen-docs exists only in the doc
// generator build (-tags batondocs, gendocs.go).
func docCommands() []*cli.Command { return nil }
