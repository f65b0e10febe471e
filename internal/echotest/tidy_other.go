//go:build !linux

package echotest

import "os/exec"

// strays finds nothing here, without /proc: no test starts a daemon here.
func strays(root string) []int { return nil }

func kill(pid int) {}

func dieWithTest(cmd *exec.Cmd) {}
