package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor"
)

func checkCommand() *cli.Command {
	flags := runFlags()
	return &cli.Command{
		Name:      "check",
		Usage:     "run the config check a reload runs, without starting anything; exit 0 when the config would be accepted, 1 when not",
		ArgsUsage: "-- COMMAND [ARG...]",
		Description: "Takes baton run's options; those that decide the check matter (--listen, --proxy, --check,\n" +
			"--check-timeout, --rlimit, --adopt-listeners, --check-command, --config). It checks the proxy's config\n" +
			"(the proxy's own check command), that --listen covers every address the config declares, and the\n" +
			"directives baton refuses, each with file:line. It needs no running baton and no control socket, binds\n" +
			"no socket and starts no proxy generation. Under --check auto a reload's check is the new generation's\n" +
			"own start (HAProxy; nginx for its syntax): baton check runs haproxy -c or nginx -T instead and says so.",
		Flags:  flags,
		Before: configFile(flags),
		Action: checkAction,
	}
}

func checkAction(c *cli.Context) error {
	rs, err := parseRunFlags(c)
	if err != nil {
		return err
	}
	defer rs.log.Sync() //nolint:errcheck // stderr
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	defer signal.Stop(sigchld)
	reaper, err := proc.NewReaper(sigchld, nil)
	if err != nil {
		return fmt.Errorf("subreaper: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reaperDone := make(chan struct{})
	go func() {
		defer close(reaperDone)
		reaper.Run(ctx)
	}()
	own, _ := proc.TakeOnRlimits(rs.rlimits)
	rep, err := supervisor.Check(ctx, supervisor.Config{
		Command: rs.cmd, Driver: rs.driver, Rlimits: rs.rlimits, CheckTimeout: rs.checkTO, Check: rs.check,
		Env: os.Environ(), AdoptListeners: rs.adopt, ListenersFromConfig: rs.fromConfig,
	}, rs.specs, supervisor.Deps{Log: rs.log, Starter: supervisor.ExecStarter(&proc.ExecStarter{Reaper: reaper, Own: own})})
	cancel()
	<-reaperDone
	w := c.App.Writer
	if rep.InsteadOfStart && rep.Argv != nil {
		fmt.Fprintf(w, "--check auto: a reload checks this config by starting the new generation, which baton check does not do: it ran `%s` instead\n", strings.Join(rep.Argv, " "))
	}
	took := rep.Took.Round(time.Millisecond)
	if err != nil {
		return fmt.Errorf("config refused (checked in %v): %w", took, err)
	}
	for _, l := range rep.Listeners {
		fmt.Fprintf(w, "listener %s (%s)\n", l.Spec.Addr, l.Where)
	}
	_, err = fmt.Fprintf(w, "config accepted (checked in %v)\n", took)
	return err
}
