// Command loadgen runs package load against a URL's host and writes every
// sample to a file, so that tests and benchmarks can run the load in a
// process of its own (not slowed down by the race detector, not sharing a
// scheduler with the code under test).
package main

import (
	"context"
	"encoding/gob"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

func main() {
	var (
		cfg  load.Config
		mode string
		out  string
	)
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "HOST:PORT to load")
	flag.StringVar(&cfg.Path, "path", "/", "request path")
	flag.IntVar(&cfg.Workers, "workers", 16, "concurrent clients")
	flag.StringVar(&mode, "mode", "newconn", "newconn (a connection per request) or keepalive")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to run (at most 10m)")
	flag.IntVar(&cfg.MaxRequests, "max", 0, "stop after this many requests (0: no limit)")
	flag.Float64Var(&cfg.Rate, "rate", 0, "total requests per second cap (0: none)")
	flag.StringVar(&cfg.GenHeader, "gen-header", load.DefaultGenHeader, "response header naming the generation")
	flag.StringVar(&out, "out", "", "write the result (gob) to this file")
	flag.Parse()
	switch mode {
	case "newconn":
		cfg.Mode = load.NewConn
	case "keepalive":
		cfg.Mode = load.KeepAlive
	default:
		fmt.Fprintf(os.Stderr, "loadgen: -mode %q: want newconn or keepalive\n", mode)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := load.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	fmt.Println(res.Summary())
	if out != "" {
		if err := write(out, res); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
	}
}

func write(path string, res *load.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := gob.NewEncoder(f).Encode(res); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
