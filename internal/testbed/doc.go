// Package testbed holds what the tests and the bench both set up and read:
// the HAProxy and nginx configs they serve, baton's `status --json` as the
// tests look at it, and facts about a process from /proc.
//
// It never imports testing: the storm command (bench/cmd/storm), which
// users run, builds on it. Every function returns its error; the
// testing.TB side (skip, fail, cleanup) stays in batontest, which
// re-exports these names for the tests.
package testbed
