//go:build !linux

package main

import (
	"errors"
	"net"
)

// Daemon mode needs Linux; elsewhere, run -foreground under launchd or rc.d.
func isDaemon() bool                            { return false }
func daemon(pidPath, dir, logPath string) error { return nil }
func startDaemon(...any) (int, *net.UnixConn, error) {
	return 0, nil, errors.New("daemon mode needs Linux; use -foreground")
}
