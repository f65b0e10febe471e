//go:build !linux

package main

import "errors"

// Daemon mode needs Linux; elsewhere, run -foreground under launchd or rc.d.
func isDaemon() bool                            { return false }
func daemon(pidPath, dir, logPath string) error { return nil }
func startDaemon(...any) (*link, <-chan error) {
	return nil, failed(errors.New("daemon mode needs Linux; use -foreground"))
}
