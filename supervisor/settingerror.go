package supervisor

// SettingError is a setting New refused. Setting names it as the Go API
// does (WatchPaths), so that a command line can name its own flag where it
// wraps the error; the text says what is wrong without it.
// proc.SettingError is the same for StartNice and StartCPUs.
type SettingError struct {
	Setting string
	Err     error
}

func (e *SettingError) Error() string { return e.Err.Error() }

func (e *SettingError) Unwrap() error { return e.Err }
