package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/batonproxy/baton/doctor"
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check this host for what makes proxy reloads lose or misroute connections (exit 0: all clear, 1: findings)",
		Flags: []cli.Flag{
			jsonFlag(),
			&cli.StringSliceFlag{Name: "control", Aliases: []string{"c"}, Usage: "baton control socket `PATH` to query (repeatable; default: those of every `baton run` on the host)"},
			newDurationFlag(&cli.DurationFlag{Name: "old-after", Value: doctor.DefaultOldAfter, Usage: "how long an old proxy process may keep listening beside a newer one, or a generation may drain, before it is reported"}),
			newDurationFlag(&cli.DurationFlag{Name: "churn-window", Value: doctor.DefaultChurnWindow, Usage: "listener re-creations older than this are not reported"}),
			&cli.IntSliceFlag{Name: "port", Usage: "only report findings about this `PORT` (TCP, or UDP for the udp- checks; repeatable; host-wide findings are always reported)"},
			&cli.IntSliceFlag{Name: "pid", Usage: "only report findings about this `PID` (repeatable; host-wide findings are always reported)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("doctor: unexpected argument %q", c.Args().First())
			}
			if c.Duration("old-after") <= 0 || c.Duration("churn-window") <= 0 {
				return usagef("doctor: --old-after and --churn-window must be positive")
			}
			rep, err := doctor.Run(c.Context, doctor.Options{
				ControlPaths: c.StringSlice("control"), OldAfter: c.Duration("old-after"),
				ChurnWindow: c.Duration("churn-window"), Ports: c.IntSlice("port"), Pids: c.IntSlice("pid"),
			})
			if err != nil {
				return fmt.Errorf("doctor: %w", err)
			}
			if c.Bool("json") {
				err = printJSON(c.App.Writer, rep)
			} else {
				err = printReport(c.App.Writer, rep)
			}
			if err != nil {
				return err
			}
			if rep.Failing() {
				return fmt.Errorf("doctor: %s", countLine(rep))
			}
			return nil
		},
	}
}

// printReport renders a report for people: one block per finding, then
// the notes and a summary line.
func printReport(w io.Writer, r doctor.Report) error {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%s %s %s\n", strings.ToUpper(string(f.Severity)), f.Check, f.Subject)
		for _, part := range []struct{ label, text string }{{"saw", f.Saw}, {"why", f.Why}, {"fix", f.Fix}} {
			b.WriteString(wrap("  "+part.label+": ", part.text, 100))
		}
		b.WriteString("\n")
	}
	for _, n := range r.Notes {
		b.WriteString(wrap("note: ", n, 100))
	}
	took := fmt.Sprintf("%d checks in %.0f ms", len(r.Checked), r.TookMs)
	if r.Failing() {
		fmt.Fprintf(&b, "%s; %s\n", countLine(r), took)
	} else if n := r.Count(doctor.Info); n > 0 {
		fmt.Fprintf(&b, "all clear (%d for information); %s\n", n, took)
	} else {
		fmt.Fprintf(&b, "all clear; %s\n", took)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// countLine is "3 findings (1 critical, 2 warning)".
func countLine(r doctor.Report) string {
	crit, warn := r.Count(doctor.Critical), r.Count(doctor.Warning)
	s := fmt.Sprintf("%d findings (%d critical, %d warning)", crit+warn, crit, warn)
	if crit+warn == 1 {
		s = fmt.Sprintf("1 finding (%d critical, %d warning)", crit, warn)
	}
	return s
}

// wrap prints text after prefix, folded at width, continuation lines
// indented under the text.
func wrap(prefix, text string, width int) string {
	indent := strings.Repeat(" ", len(prefix))
	var b strings.Builder
	line := prefix
	for _, word := range strings.Fields(text) {
		if len(line)+len(word)+1 > width && len(line) > len(indent) {
			b.WriteString(strings.TrimRight(line, " ") + "\n")
			line = indent
		}
		if line != prefix && line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}
