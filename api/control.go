package api

// APIError is the body of every failed control request.
type APIError struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

// UpgradeResult is what a successful upgrade reports: the body of a
// successful POST /v1/upgrade.
type UpgradeResult struct {
	OldPid int `json:"old_pid"`
	NewPid int `json:"new_pid"`
}

// StopResponse is the answer of POST /v1/stop once baton has stopped.
type StopResponse struct {
	Stopped bool `json:"stopped"`
}
