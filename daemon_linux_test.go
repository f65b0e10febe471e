package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runEchod runs echod (the daemon's parent) from dir and returns what it printed.
func runEchod(t *testing.T, dir string, extra []*os.File, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(echodBin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Dir, cmd.ExtraFiles = dir, extra
	return run(t, cmd)
}

// startDaemon starts echod in daemon mode from dir and returns the pid and
// address that the parent printed; the daemon is killed when the test ends.
func startDaemon(t *testing.T, dir string, args ...string) (pid int, addr string) {
	t.Helper()
	out, errOut, code := runEchod(t, dir, nil, args...)
	_, err := fmt.Sscanf(out, "echod: daemon pid %d listening on %s (log ", &pid, &addr)
	if pid > 0 { // even if the rest of the line is wrong
		t.Cleanup(func() {
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(t, pid)
		})
	}
	if err != nil || code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	return pid, addr
}

// procStat returns the fields of /proc/PID/stat after the command name:
// state, ppid, pgrp, session, tty_nr, ...
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := bytes.LastIndexByte(b, ')'); err == nil && i > 0 {
		return strings.Fields(string(b[i+1:]))
	}
	return nil
}

// waitGone waits until pid has exited. Its parent is gone, so it may stay a
// zombie if this machine's init does not reap.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	poll(t, 10*time.Second, fmt.Sprintf("pid %d still running", pid), func() bool {
		st := procStat(pid)
		return st == nil || st[0] == "Z"
	})
}

// running lists the live processes whose command line contains marker.
func running(marker string) []string {
	var found []string
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if st := procStat(pid); bytes.Contains(b, []byte(marker)) && st != nil && st[0] != "Z" {
			found = append(found, p)
		}
	}
	return found
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == 0 {
		t.Fatalf("PID file %s: %q, %v", path, b, err)
	}
	return pid
}

// TestDaemon checks the post's four steps on the running daemon through /proc.
func TestDaemon(t *testing.T) {
	dir, work := t.TempDir(), t.TempDir()
	pid, addr := startDaemon(t, dir, "-dir", work) // -log and -pidfile are relative to dir
	st, self := procStat(pid), procStat(os.Getpid())
	if st[3] != strconv.Itoa(pid) || st[3] == self[3] {
		t.Errorf("session %s, want its own (%d); the test's is %s", st[3], pid, self[3])
	}
	if st[2] != strconv.Itoa(pid) || st[2] == self[2] {
		t.Errorf("process group %s, want its own (%d); the test's is %s", st[2], pid, self[2])
	}
	if st[4] != "0" {
		t.Errorf("tty_nr %s: it has a controlling terminal", st[4])
	}
	if st[1] == strconv.Itoa(os.Getpid()) {
		t.Errorf("ppid %s: still the test's child", st[1])
	}
	link := func(name string) string { l, _ := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, name)); return l }
	for name, want := range map[string]string{
		"cwd": work, "fd/0": "/dev/null", "fd/1": "/dev/null", "fd/2": filepath.Join(dir, "echod.log"),
	} {
		if got := link(name); got != want {
			t.Errorf("%s -> %q, want %q", name, got, want)
		}
	}
	if got := readPID(t, filepath.Join(dir, "echod.pid")); got != pid {
		t.Errorf("PID file holds %d, the parent printed %d", got, pid)
	}

	// ① SIGHUP, SIGPIPE and the job-control stops are ignored (bit sig-1 of SigIgn).
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var ign uint64
	if i := bytes.Index(status, []byte("SigIgn:\t")); i >= 0 {
		ign, _ = strconv.ParseUint(string(status[i+8:i+24]), 16, 64)
	}
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU} {
		if ign&(1<<(sig-1)) == 0 {
			t.Errorf("%v is not ignored (SigIgn %016x)", sig, ign)
		}
	}
	syscall.Kill(pid, syscall.SIGHUP)
	mustEcho(t, dial(t, addr), []byte("still here after SIGHUP"))

	syscall.Kill(pid, syscall.SIGTERM)
	waitGone(t, pid)
	if _, err := os.Stat(filepath.Join(dir, "echod.pid")); !os.IsNotExist(err) {
		t.Errorf("PID file left after SIGTERM: %v", err)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "echod.log")); !bytes.Contains(log, []byte("msg=stop")) {
		t.Errorf("no stop line in the log:\n%s", log)
	}
}

// TestDaemonLeaksNoDescriptor starts echod with an inherited pipe that is not
// close-on-exec, as shells leave them: the daemon must not keep it open.
func TestDaemonLeaksNoDescriptor(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	extra := []*os.File{nil, nil, nil, nil, nil, nil, w} // fd 9, above what echod passes on
	out, errOut, code := runEchod(t, t.TempDir(), extra)
	w.Close()
	var pid int
	_, err = fmt.Sscanf(out, "echod: daemon pid %d", &pid)
	if pid > 0 {
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); waitGone(t, pid) })
	}
	if err != nil || code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(r); err != nil {
		t.Fatalf("the daemon holds our pipe open: %v", err)
	}
}

func TestDaemonPortInUse(t *testing.T) {
	other := dial(t, startServer(t).addr) // any listener will do; this one is at hand
	addr := other.RemoteAddr().String()
	dir := t.TempDir()
	_, errOut, code := runEchod(t, dir, nil, "-addr", addr, "-log", dir+"/echod.log")
	if code != 1 || !strings.HasPrefix(errOut, "echod: ") || !strings.Contains(errOut, "address already in use") {
		t.Errorf("exit %d, stderr %q; want 1 and address already in use", code, errOut)
	}
	if left := running(dir); len(left) > 0 {
		t.Errorf("left running: %v", left)
	}
}

func TestDaemonPIDFileLocked(t *testing.T) {
	dir := t.TempDir()
	pid, addr := startDaemon(t, dir)
	_, errOut, code := runEchod(t, dir, nil, "-addr", addr) // as `make run` twice would
	if want := fmt.Sprintf("echod: already running as pid %d", pid); code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if got := readPID(t, filepath.Join(dir, "echod.pid")); got != pid {
		t.Errorf("the refused start changed the PID file to %d", got)
	}
}

// TestDaemonStalePIDFile kills a daemon so that its PID file stays behind,
// unlocked: the next start must take it over.
func TestDaemonStalePIDFile(t *testing.T) {
	dir := t.TempDir()
	old, _ := startDaemon(t, dir)
	syscall.Kill(old, syscall.SIGKILL)
	waitGone(t, old)
	if got := readPID(t, filepath.Join(dir, "echod.pid")); got != old {
		t.Fatalf("PID file holds %d, want the dead daemon's %d", got, old)
	}
	pid, _ := startDaemon(t, dir)
	if got := readPID(t, filepath.Join(dir, "echod.pid")); got != pid {
		t.Errorf("PID file holds %d, want %d", got, pid)
	}
}

// TestDaemonStartFails covers a failure in the parent (a bad -dir) and one
// in the child (its PID file cannot be written): exit 1, the reason on
// stderr, and nothing left running.
func TestDaemonStartFails(t *testing.T) {
	for _, tc := range []struct{ flag, value, want string }{
		{"-dir", "/nonexistent", "-dir /nonexistent: no such directory"},
		{"-pidfile", "/dev/full", "/dev/full"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			dir := t.TempDir()
			_, errOut, code := runEchod(t, dir, nil, tc.flag, tc.value, "-log", dir+"/echod.log")
			if code != 1 || !strings.HasPrefix(errOut, "echod: ") || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 1 and one line with %q", code, errOut, tc.want)
			}
			if left := running(dir); len(left) > 0 {
				t.Errorf("left running: %v", left)
			}
		})
	}
}

func TestForegroundPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fg.pid")
	s := startServer(t, "-pidfile", path)
	if got := readPID(t, path); got != s.cmd.Process.Pid {
		t.Errorf("PID file holds %d, want %d", got, s.cmd.Process.Pid)
	}
	s.stop(t, 5*time.Second)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("PID file left after SIGTERM: %v", err)
	}
}

// TestLockPIDFollowsRemoval races a start against a daemon that removes its
// PID file and exits: a start that wins must hold the lock on the file that
// is at the path, not on the removed one.
func TestLockPIDFollowsRemoval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "echod.pid")
	for i := range 3000 {
		running, err := lockPID(path)
		if err != nil {
			t.Fatal(err)
		}
		stopped := make(chan struct{})
		go func() { os.Remove(path); running.Close(); close(stopped) }()
		f, err := lockPID(path)
		<-stopped
		if err != nil {
			continue // e.g., already running: the start came first
		}
		fi, _ := f.Stat()
		at, _ := os.Stat(path)
		f.Close()
		if !os.SameFile(fi, at) {
			t.Fatalf("start %d locked a PID file that is no longer at %s", i, path)
		}
	}
}
