package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batonproxy/baton/supervisor"
)

// printStatus renders a status as tables for people.
func printStatus(w io.Writer, st supervisor.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	state := "running"
	if st.Stopping {
		state = "stopping"
	}
	fmt.Fprintf(tw, "baton pid %d, %s, %s for %s, proxy %s: %s\n", st.Pid, state, "up", round(now.Sub(st.StartedAt)), st.Proxy, strings.Join(st.Command, " "))
	fmt.Fprintf(tw, "reloads ok %d, failed %d; crashes %d; hard stops %d; kills %d; child limits %s\n",
		st.Counters.ReloadsOK, st.Counters.ReloadsFailed, st.Counters.Crashes, st.Counters.HardStops, st.Counters.Kills, strings.Join(st.Rlimits, " "))
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
	fmt.Fprintln(tw, "GEN\tSTATE\tPID\tAGE\tCONNS\tFDS\tDEADLINE\tPROCESSES (pid nofile soft/hard)")
	for _, g := range st.Generations {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", g.Gen, g.State, g.Pid, age(g.StartedAt, now),
			g.Connections, g.OpenFds, deadline(g, now), procs(g.Processes))
	}
	if r := st.LastReload; r != nil {
		fmt.Fprintln(tw)
		result := "ok"
		if r.Error != "" {
			result = "FAILED: " + r.Error
		}
		fmt.Fprintf(tw, "last reload: generation %d, %.1f ms, %s ago, %s\n", r.Gen, r.DurationMs, round(now.Sub(r.At)), result)
	}
	if w := st.Watch; w != nil {
		fmt.Fprintf(tw, "watch %s: events %d, unchanged %d, reloads %d, failed %d", strings.Join(w.Paths, " "), w.Events, w.Unchanged, w.Reloads, w.Failed)
		if w.Waiting != "" {
			fmt.Fprintf(tw, "; waiting: %s", w.Waiting)
		}
		if w.LastError != "" {
			fmt.Fprintf(tw, "; last error: %s", w.LastError)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
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

func deadline(g supervisor.GenStatus, now time.Time) string {
	if g.Deadline == nil {
		return "-"
	}
	return fmt.Sprintf("%s in %s (%s)", g.DeadlineAction, round(g.Deadline.Sub(now)), g.Deadline.Format(time.RFC3339))
}

func procs(ps []supervisor.ProcStatus) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%d %s/%s", p.Pid, limit(p.Nofile.Soft), limit(p.Nofile.Hard)))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func limit(v uint64) string {
	if v == supervisor.Unlimited {
		return "unlimited"
	}
	return fmt.Sprint(v)
}
