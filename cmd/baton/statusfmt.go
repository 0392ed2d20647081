package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batonproxy/baton/api"
)

// statusReloads is how many reloads `baton status` shows by default.
const statusReloads = 10

// printStatus renders a status as tables for people, with the last
// statusReloads reloads.
func printStatus(w io.Writer, st api.Status, now time.Time) error {
	return printStatusN(w, st, now, statusReloads)
}

// printStatusN is printStatus with the last n reloads (oldest first, the
// newest at the bottom, as in a log); a multi-line error is printed in full
// once, for the newest failure shown, and as its key line elsewhere.
func printStatusN(w io.Writer, st api.Status, now time.Time, n int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	state := "running"
	if st.Stopping {
		state = "stopping"
	}
	fmt.Fprintf(tw, "baton pid %d, %s, %s for %s, proxy %s: %s\n", st.Pid, state, "up", round(now.Sub(st.StartedAt)), st.Proxy, strings.Join(st.Command, " "))
	fmt.Fprintf(tw, "reloads ok %d, failed %d (the first start not counted); crashes %d; hard stops %d; kills %d; child limits %s\n",
		st.Counters.ReloadsOK, st.Counters.ReloadsFailed, st.Counters.Crashes, st.Counters.HardStops, st.Counters.Kills, strings.Join(st.Rlimits, " "))
	if c := st.Config; c != nil {
		fmt.Fprintf(tw, "config: generation %d runs %s of %s; on disk: %s\n", c.Gen, short(c.AppliedDigest), strings.Join(c.Files, " "), onDisk(c))
	}
	if st.RestartAt != nil {
		fmt.Fprintf(tw, "replacement after %d crashes in a row starts in %s\n", st.ConsecutiveCrashes, round(st.RestartAt.Sub(now)))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "LISTENER\tADDRESS\tINODE\tACCEPT QUEUE/BACKLOG\tDECLARED")
	for _, l := range st.Listeners {
		where := l.Where
		if where == "" {
			where = "--listen"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d/%d\t%s\n", l.Name, l.Addr, l.Inode, l.Queue, l.Backlog, where)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "GEN\tSTATE\tPID\tAGE\tCONNS\tFDS\tDEADLINE\tPROCESSES (pid role nofile soft/hard)")
	for _, g := range st.Generations {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", g.Gen, g.State, g.Pid, age(g.StartedAt, now),
			g.Connections, g.OpenFds, deadline(g, now), procs(g.Processes))
	}
	failed := printReloads(tw, st.Reloads, now, n)
	if w := st.Watch; w != nil {
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "watch %s: events %d, unchanged %d, reloads %d, failed %d", strings.Join(w.Paths, " "), w.Events, w.Unchanged, w.Reloads, w.Failed)
		if w.Waiting != "" {
			fmt.Fprintf(tw, "; waiting: %s", w.Waiting)
		}
		if w.LastError != "" {
			fmt.Fprintf(tw, "; last error: %s", errorLine(w.LastError))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Outside the table: lines of the proxy's own output would widen its
	// columns.
	if failed != nil {
		fmt.Fprintf(w, "\nreload to generation %d failed %s ago (%s):\n", failed.Gen, round(now.Sub(failed.At)), failed.Trigger)
		for _, l := range strings.Split(failed.Error, "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	return nil
}

// printReloads writes the last n reloads of recs (oldest first) as a
// table; it returns the newest failure among them whose error has more
// than one line, for printing in full below.
func printReloads(tw io.Writer, recs []api.ReloadRecord, now time.Time, n int) *api.ReloadRecord {
	if len(recs) == 0 || n <= 0 {
		return nil
	}
	shown := recs[max(len(recs)-n, 0):]
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "RELOADS (last %d of %d kept, oldest first)\n", len(shown), len(recs))
	fmt.Fprintln(tw, "AGO\tGEN\tTRIGGER\tRESULT\tDURATION\tCONFIG\tERROR")
	full := -1 // the newest failure with a multi-line error
	for i, r := range shown {
		if r.Outcome != api.OutcomeOK && strings.Contains(r.Error, "\n") {
			full = i
		}
	}
	for i, r := range shown {
		result, errText := "ok", ""
		if r.Outcome != api.OutcomeOK {
			result, errText = "FAILED", errorLine(r.Error)
		}
		if i == full {
			errText += " (in full below)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.1f ms\t%s\t%s\n", round(now.Sub(r.At)), r.Gen, r.Trigger, result, r.DurationMs, short(r.ConfigDigest), errText)
	}
	if full < 0 {
		return nil
	}
	failed := shown[full]
	return &failed
}

// errorLine is the line of a (multi-line) error that says what went wrong:
// the first of the proxy's alert or emergency lines when there are some,
// else the first line.
func errorLine(e string) string {
	lines := strings.Split(e, "\n")
	for _, l := range lines[1:] {
		if strings.Contains(l, "[ALERT]") || strings.Contains(l, "[emerg]") {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return lines[0]
}

// short is the first 12 hex digits of a digest, "-" for none.
func short(d string) string {
	if d == "" {
		return "-"
	}
	return d[:min(12, len(d))]
}

func onDisk(c *api.ConfigStatus) string {
	switch {
	case c.OnDiskError != "":
		return "cannot be read (" + c.OnDiskError + "): not what runs"
	case c.OnDiskDiffers:
		return short(c.OnDiskDigest) + ", DIFFERS: not applied"
	}
	return "the same"
}

func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

func age(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return round(now.Sub(*t)).String()
}

func deadline(g api.GenStatus, now time.Time) string {
	if g.Deadline == nil {
		return "-"
	}
	return fmt.Sprintf("%s in %s (%s)", g.DeadlineAction, round(g.Deadline.Sub(now)), g.Deadline.Format(time.RFC3339))
}

func procs(ps []api.ProcStatus) string {
	var parts []string
	for _, p := range ps {
		role := p.Role
		if role == "" {
			role = "-"
		}
		parts = append(parts, fmt.Sprintf("%d %s %s/%s", p.Pid, role, limit(p.Nofile.Soft), limit(p.Nofile.Hard)))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func limit(v uint64) string {
	if v == api.Unlimited {
		return "unlimited"
	}
	return fmt.Sprint(v)
}
