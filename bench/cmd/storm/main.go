// Command storm measures what clients see while a proxy is reloaded over
// and over.
//
//	storm run --url http://HOST:PORT/PATH --reload 'COMMAND' [--interval 1s]
//	          [--duration 30s] [--mode newconn|keepalive] [--workers 16]
//	          [--rate N] [--version-header X-Gen] [--json]
//	          [--proto http1|h3] [--cacert FILE] [--insecure]
//	storm bench [--quick] [--json FILE] [--markdown FILE] [--svg FILE]
//	            [--only REGEXP] [--baton BIN] [--keep] [--h3]
//	            [--haproxy PATH]... [--nginx PATH]
//
// `run` is for users: the load of bench/load (HTTP/1.1, or HTTP/3 with
// --proto h3; no retries, every failure classified) against their URL
// while their reload command runs every interval, one at a time. `bench`
// is `make bench`: the same load and reload storms against baton and
// against the reloads people use today (HAProxy's master-worker reload,
// nginx's HUP, the init-script `-sf` idiom), plus reload latency (per
// HAProxy version with several --haproxy, and on big configs: 10,000
// backends, 1,000 certificates), request latency during reloads, kill -9,
// steady-state throughput and scale scenarios, printed as Markdown tables
// and written to docs/BENCHMARKS.md, a JSON file and an SVG plot. With
// --h3 it also runs HTTP/3 reload storms (HAProxy -W, nginx HUP, baton),
// printed with the tables.
//
// The bench starts every process itself, on 127.0.0.1 only, in a short
// temporary directory, and stops each one by pid (checked against its
// start time) — never by name: other haproxy and nginx processes on the
// machine are left alone. Every load run is bounded in time.
//
// Nothing imports this package.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "storm: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  storm run --url URL --reload COMMAND [--interval 1s] [--duration 30s] [--mode newconn|keepalive]
            [--workers 16] [--rate N] [--version-header HEADER] [--json] [--proto http1|h3] [--cacert FILE] [--insecure]
  storm bench [--quick] [--json FILE] [--markdown FILE] [--svg FILE] [--only REGEXP] [--baton BIN] [--keep] [--h3]
              [--haproxy PATH]... [--nginx PATH]
Run "storm run -h" or "storm bench -h" for the flags.
`)
}
