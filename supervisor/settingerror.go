package supervisor

// SettingError is a setting New or NewStartSched refused. Setting names it
// as the Go API does (StartNice, StartCPUs, WatchPaths), so that a command
// line can name its own flag where it wraps the error; the text says what
// is wrong without it.
type SettingError struct {
	Setting string
	Err     error
}

func (e *SettingError) Error() string { return e.Err.Error() }

func (e *SettingError) Unwrap() error { return e.Err }
