//go:build !linux

package main

import (
	"errors"
	"net"
	"os"
)

// Daemon mode is the post's, for Linux; elsewhere, run -foreground under launchd or rc.d.
func isDaemon() bool { return false }
func daemon() error  { return nil }

func startDaemon(net.Listener, *os.File, *os.File) (int, error) {
	return 0, errors.New("daemon mode needs Linux; use -foreground")
}
