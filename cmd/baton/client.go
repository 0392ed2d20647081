package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batonproxy/baton/api"
)

// client talks to a running baton over its control socket.
type client struct {
	path string
	http *http.Client
}

func newClient(path string) *client {
	return &client{path: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}}
}

// do sends one request and decodes a 2xx body into out; a failed request
// becomes an error carrying the API's message. A request that reached a
// baton just as it handed over to its upgrade is sent again, to the new one.
func (c *client) do(ctx context.Context, method, path string, out any) error {
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, method, path, out)
		if !errors.Is(err, errHandedOver) || attempt >= 5 {
			return err
		}
	}
}

// apiError is a failure the control API reported, with its code
// ("check_failed", ...).
type apiError struct{ code, msg string }

func (e *apiError) Error() string { return e.msg }

// errPermission: the control socket refused this user.
var errPermission = errors.New("permission denied")

// errorCode is the "code" of a failure as `--json` prints it: the API's own
// code, or what kept the client from an answer.
func errorCode(err error) string {
	var ae *apiError
	var ue usageError
	switch {
	case errors.As(err, &ae) && ae.code != "":
		return ae.code
	case errors.As(err, &ue):
		return "usage"
	case errors.Is(err, errNoBaton):
		return "no_baton"
	case errors.Is(err, errPermission):
		return "permission_denied"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "failed"
}

// jsonFailure is what `--json` prints on stdout when a command fails; the
// exit status stays the command's.
type jsonFailure struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Code  string `json:"code"`
}

// jsonResult prints, with --json, err as a jsonFailure, and returns err.
func jsonResult(c *cli.Context, err error) error {
	if err != nil && c.Bool("json") {
		_ = printJSON(c.App.Writer, jsonFailure{Error: err.Error(), Code: errorCode(err)})
	}
	return err
}

// errHandedOver: the baton that answered has just been replaced.
var errHandedOver = errors.New("baton handed over to its upgrade")

func (c *client) once(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://baton"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.dialError(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.path, err)
	}
	if resp.StatusCode/100 != 2 {
		var ae api.APIError
		if json.Unmarshal(body, &ae) == nil && ae.Code == "handed_over" {
			return errHandedOver
		}
		if json.Unmarshal(body, &ae) == nil && ae.Error != "" {
			return &apiError{code: ae.Code, msg: ae.Error}
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(body, out)
}

func (c *client) dialError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w on %s (is `baton run` running? set --control or BATON_CONTROL)", errNoBaton, c.path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w on control socket %s: run as root or as baton's user", errPermission, c.path)
	case ctx.Err() != nil:
		return fmt.Errorf("no answer from %s in time: %w (a reload goes on in baton)", c.path, ctx.Err())
	}
	return fmt.Errorf("control socket %s: %w", c.path, err)
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print the answer as JSON"}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func reloadCommand() *cli.Command {
	return requestCommand(request[api.ReloadResponse]{
		name:     "reload",
		usage:    "start a new generation with the current config and wait until it alone holds the listeners",
		timeout:  10 * time.Minute,
		progress: true,
		json: func(res api.ReloadResponse) any {
			return struct {
				OK bool `json:"ok"`
				api.ReloadResponse
			}{true, res}
		},
		text: func(res api.ReloadResponse) string {
			return fmt.Sprintf("reloaded: generation %d (pid %d) serving after %.1f ms", res.Generation, res.Pid, res.DurationMs)
		},
	})
}

// request is a client command that makes one POST to /v1/NAME and waits
// for its answer: reload and upgrade.
type request[T any] struct {
	name, usage string
	timeout     time.Duration // --timeout's default
	progress    bool          // show progress on a terminal
	json        func(T) any   // the --json answer, with "ok"
	text        func(T) string
}

func requestCommand[T any](r request[T]) *cli.Command {
	return &cli.Command{
		Name:  r.name,
		Usage: r.usage,
		Flags: []cli.Flag{
			controlFlag(), jsonFlag(),
			newDurationFlag(&cli.DurationFlag{Name: "timeout", Value: r.timeout, Usage: "how long to wait for the answer"}),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return jsonResult(c, usagef("%s: unexpected argument %q", r.name, c.Args().First()))
			}
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			stopProgress := func() {}
			if r.progress && terminal(c.App.ErrWriter) {
				stopProgress = showProgress(c.App.ErrWriter, c.String("control"))
			}
			var res T
			err := newClient(c.String("control")).do(ctx, http.MethodPost, "/v1/"+r.name, &res)
			stopProgress()
			if err != nil {
				return jsonResult(c, fmt.Errorf("%s failed: %w", r.name, err))
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, r.json(res))
			}
			_, err = fmt.Fprintln(c.App.Writer, r.text(res))
			return err
		},
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the generations, listeners, limits, applied config and last reloads of a running baton",
		Flags: []cli.Flag{controlFlag(), jsonFlag(),
			&cli.IntFlag{Name: "reloads", Value: statusReloads, Usage: fmt.Sprintf("show the last `N` reloads (0-%d; --json has all that are kept)", api.ReloadHistoryLen)}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("status: unexpected argument %q", c.Args().First())
			}
			n := c.Int("reloads")
			if n < 0 || n > api.ReloadHistoryLen {
				return usagef("status: --reloads %d: want 0-%d", n, api.ReloadHistoryLen)
			}
			ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
			defer cancel()
			var st api.Status
			if err := newClient(c.String("control")).do(ctx, http.MethodGet, "/v1/status", &st); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, st)
			}
			return printStatusN(c.App.Writer, st, time.Now(), n)
		},
	}
}

func upgradeCommand() *cli.Command {
	return requestCommand(request[api.UpgradeResult]{
		name:    "upgrade",
		usage:   "replace the running baton with the binary now on disk, keeping every socket and generation",
		timeout: 2 * time.Minute,
		json: func(res api.UpgradeResult) any {
			return struct {
				OK bool `json:"ok"`
				api.UpgradeResult
			}{true, res}
		},
		text: func(res api.UpgradeResult) string {
			return fmt.Sprintf("upgraded: baton pid %d took over from pid %d", res.NewPid, res.OldPid)
		},
	})
}

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:  "stop",
		Usage: "drain every generation (or, --fast, stop them now) and end baton; waits until it is done",
		Flags: []cli.Flag{
			controlFlag(),
			&cli.BoolFlag{Name: "fast", Usage: "hard stop instead of draining"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("stop: unexpected argument %q", c.Args().First())
			}
			path := "/v1/stop"
			if c.Bool("fast") {
				path += "?fast=1"
			}
			var out map[string]bool
			if err := newClient(c.String("control")).do(c.Context, http.MethodPost, path, &out); err != nil {
				return fmt.Errorf("stop failed: %w", err)
			}
			_, err := fmt.Fprintln(c.App.Writer, "stopped")
			return err
		},
	}
}
