//go:build race

package main

// The binaries under test are built with the race detector when the tests are.
func init() { buildFlags = append(buildFlags, "-race") }
