// Package api holds the JSON wire types of baton: the answers of the
// control API (GET /v1/status, GET /v1/reloads, POST /v1/reload,
// POST /v1/upgrade, POST /v1/stop and every failure), the records of the reload history,
// the user's pid file as the state file keeps it, and the lines of the
// listener history (CONTROL.listeners) that doctor reads.
//
// These types are the stable contract described in docs/design.md ("The
// control API and its JSON"): field names, tags, order and omitempty are
// the bytes clients see, so a change here is a change of the wire format.
// The supervisor fills them in; cmd/baton's client commands read them
// without importing the supervisor, and so do doctor's checks of the
// status and history.
//
// The package is a leaf: it imports only the standard library, nothing of
// baton's, so that anything may import it.
package api
