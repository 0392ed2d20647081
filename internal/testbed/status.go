package testbed

import "time"

// Status mirrors the parts of `baton status --json` the tests and the bench
// look at.
type Status struct {
	Pid         int `json:"pid"`
	Generations []struct {
		Gen            int        `json:"generation"`
		State          string     `json:"state"`
		Pid            int        `json:"pid"`
		Deadline       *time.Time `json:"deadline"`
		DeadlineAction string     `json:"deadline_action"`
		Processes      []struct {
			Pid    int    `json:"pid"`
			Role   string `json:"role"`
			Nofile struct {
				Soft uint64 `json:"soft"`
				Hard uint64 `json:"hard"`
			} `json:"nofile"`
		} `json:"processes"`
	} `json:"generations"`
	Listeners []struct {
		Addr  string `json:"addr"`
		Inode uint64 `json:"inode"`
	} `json:"listeners"`
	LastReload *Reload        `json:"last_reload"`
	Reloads    []Reload       `json:"reloads"`
	Config     *ConfigView    `json:"config"`
	Counters   map[string]int `json:"counters"`
}

// Reload is one record of the reload history (and last_reload).
type Reload struct {
	Gen          int       `json:"generation"`
	At           time.Time `json:"at"`
	Trigger      string    `json:"trigger"`
	Requests     int       `json:"requests"`
	Outcome      string    `json:"outcome"`
	DurationMs   float64   `json:"duration_ms"`
	ConfigDigest string    `json:"config_digest"`
	Error        string    `json:"error"`
}

// ConfigView is the status's applied config and the files on disk.
type ConfigView struct {
	Files         []string `json:"files"`
	Gen           int      `json:"applied_generation"`
	AppliedDigest string   `json:"applied_digest"`
	OnDiskDigest  string   `json:"on_disk_digest"`
	OnDiskDiffers bool     `json:"on_disk_differs"`
	OnDiskError   string   `json:"on_disk_error"`
}

// Active returns the active generation's number and leader pid (0, 0 if none).
func (s Status) Active() (gen, pid int) {
	for _, g := range s.Generations {
		if g.State == "active" {
			return g.Gen, g.Pid
		}
	}
	return 0, 0
}

// Gen returns generation gen of s, or nil.
func (s Status) Gen(gen int) *GenView {
	for _, g := range s.Generations {
		if g.Gen == gen {
			v := GenView{Gen: g.Gen, State: g.State, Pid: g.Pid, Deadline: g.Deadline, DeadlineAction: g.DeadlineAction}
			for _, p := range g.Processes {
				v.Pids = append(v.Pids, p.Pid)
				v.Nofile = append(v.Nofile, [2]uint64{p.Nofile.Soft, p.Nofile.Hard})
			}
			return &v
		}
	}
	return nil
}

// GenView is a flattened generation of a Status.
type GenView struct {
	Gen            int
	State          string
	Pid            int // leader (the HAProxy master)
	Deadline       *time.Time
	DeadlineAction string
	Pids           []int       // every process of the generation, as status lists them
	Nofile         [][2]uint64 // soft, hard per entry of Pids
}

// Others returns the generation's pids other than its leader (HAProxy's
// workers).
func (g GenView) Others() []int {
	var out []int
	for _, p := range g.Pids {
		if p != g.Pid {
			out = append(out, p)
		}
	}
	return out
}
