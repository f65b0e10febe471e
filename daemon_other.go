//go:build !linux

package main

import (
	"context"
	"errors"
	"net"
	"os"
)

// Daemon mode needs Linux; elsewhere, run -foreground under launchd or rc.d.
func isDaemon() bool                            { return false }
func daemon(pidPath, dir, logPath string) error { return nil }
func startDaemon(context.Context, net.Listener, *os.File, *os.File) (int, *net.UnixConn, error) {
	return 0, nil, errors.New("daemon mode needs Linux; use -foreground")
}
