package main

import (
	"bytes"
	"echod/internal/echotest"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// awaitReload waits until the PID file in dir names a daemon other than old,
// and returns it.
func awaitReload(t *testing.T, dir string, old int) int {
	t.Helper()
	pidfile := filepath.Join(dir, "echod.pid")
	echotest.Poll(t, 15*time.Second, fmt.Sprintf("pid %d did not hand over", old), func() bool {
		b, _ := os.ReadFile(pidfile)
		return len(b) > 0 && !bytes.Equal(b, fmt.Appendln(nil, old))
	})
	return echotest.ReadPID(t, pidfile)
}

// reloadOnce sends SIGHUP to pid and returns the daemon that took over, once
// pid has exited.
func reloadOnce(t *testing.T, dir string, pid int) int {
	t.Helper()
	syscall.Kill(pid, syscall.SIGHUP)
	next := awaitReload(t, dir, pid)
	echotest.WaitGone(t, pid)
	return next
}

// awaitLog waits until dir's echod.log contains want, and returns the log.
func awaitLog(t *testing.T, dir, want string) string {
	t.Helper()
	var log []byte
	echotest.Poll(t, 15*time.Second, fmt.Sprintf("no %q in the log", want), func() bool {
		log, _ = os.ReadFile(filepath.Join(dir, "echod.log"))
		return bytes.Contains(log, []byte(want))
	})
	return string(log)
}

// assertOnly checks that pid is the one process left that names dir, that
// the PID file names it, and that it serves addr.
func assertOnly(t *testing.T, dir string, pid int, addr string) {
	t.Helper()
	echotest.Poll(t, 10*time.Second, fmt.Sprintf("old daemons still running beside %d", pid), func() bool {
		return slices.Equal(echotest.Running(dir), []int{pid}) // a reload's processes come and go
	})
	if got := echotest.ReadPID(t, filepath.Join(dir, "echod.pid")); got != pid {
		t.Errorf("PID file names %d, want %d", got, pid)
	}
	echotest.MustEcho(t, echotest.Dial(t, addr), []byte("served by the daemon in the PID file"))
}

// TestReloadUnderLoad reloads three times, one after another, while twelve
// clients connect, echo 1 to 4 KiB and close, and two streams of 4 MiB run
// slowly across all three: no client is refused, reset or given a wrong
// byte. Meanwhile the PID file is never empty, and each old daemon has left
// the new pid in it by the time it exits.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir)
	pidfile := filepath.Join(dir, "echod.pid")
	stop := make(chan struct{})
	var refused, reset, corrupt, failed, echoed, empty atomic.Int64
	var firstErr atomic.Value
	count := func(err error) {
		switch {
		case err == nil:
			echoed.Add(1)
			return
		case errors.Is(err, syscall.ECONNREFUSED):
			refused.Add(1)
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
			reset.Add(1)
		case errors.Is(err, errCorrupt), errors.Is(err, errCut):
			corrupt.Add(1)
		default:
			failed.Add(1)
		}
		firstErr.CompareAndSwap(nil, err)
	}
	var clients, streams sync.WaitGroup
	clients.Go(func() { // the PID file, read as systemd would
		for {
			select {
			case <-stop:
				return
			default:
			}
			if b, err := os.ReadFile(pidfile); err != nil || len(bytes.TrimSpace(b)) == 0 {
				empty.Add(1)
			}
		}
	})
	for range 12 {
		clients.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					count(err)
					continue
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				data := echotest.Random(1024 + mrand.IntN(3073))
				count(verify(c.(*net.TCPConn), data, func() int { return len(data) }, 32<<10, 0))
				c.Close()
			}
		})
	}
	for range 2 {
		c := echotest.Dial(t, addr)
		streams.Go(func() { // 64 KiB every 40ms: about 2.6s
			count(verify(c, echotest.Random(4<<20), func() int { time.Sleep(40 * time.Millisecond); return 64 << 10 }, 32<<10, 0))
		})
	}
	var old []int
	var watchers sync.WaitGroup
	for range 3 {
		time.Sleep(100 * time.Millisecond) // a moment of traffic between reloads
		prev := pid
		syscall.Kill(prev, syscall.SIGHUP)
		watchers.Go(func() { // look at the process first, then at the file
			for end := time.Now().Add(15 * time.Second); echotest.Alive(prev) && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
			if got, _ := os.ReadFile(pidfile); echotest.Alive(prev) || bytes.Equal(got, fmt.Appendln(nil, prev)) {
				t.Errorf("pid %d exited with its own pid in the PID file, or not at all", prev)
			}
		})
		pid = awaitReload(t, dir, prev)
		old = append(old, prev)
	}
	streams.Wait()
	close(stop)
	clients.Wait()
	t.Logf("reloads %v -> %d: %d echoed, %d refused, %d reset, %d corrupt, %d other, %d empty PID file reads",
		old, pid, echoed.Load(), refused.Load(), reset.Load(), corrupt.Load(), failed.Load(), empty.Load())
	if n := refused.Load() + reset.Load() + corrupt.Load() + failed.Load(); n > 0 {
		t.Errorf("%d clients failed; first: %v", n, firstErr.Load())
	}
	if empty.Load() > 0 {
		t.Errorf("the PID file was empty or missing %d times", empty.Load())
	}
	watchers.Wait()
	assertOnly(t, dir, pid, addr)
	log := awaitLog(t, dir, fmt.Sprintf("handed_over_to=%d", pid))
	if n := strings.Count(log, "handed_over_to="); n != 3 {
		t.Errorf("%d handovers in the log, want 3:\n%s", n, log)
	}
}

// installEchod puts a copy of bin in dir as the binary that echod runs from,
// replacing what is there with a new file, as mv or a package manager does.
// install(1) writes the copy: a file that this process had open for writing
// could still be open in a child that another test forked and that has not
// yet exec'd, and running the file would then fail with ETXTBSY (Go issue 22315).
func installEchod(t *testing.T, dir, bin string, mode os.FileMode) string {
	t.Helper()
	exe := filepath.Join(dir, "echod")
	out, err := exec.Command("install", "-m", fmt.Sprintf("%o", mode), bin, exe+".new").CombinedOutput()
	if err == nil {
		err = os.Rename(exe+".new", exe)
	}
	if err != nil {
		t.Fatalf("installing %s: %v %s", bin, err, out)
	}
	return exe
}

// installScript installs script as the binary that echod runs from, as
// installEchod does: a broken build, say.
func installScript(t *testing.T, dir, script string) {
	t.Helper()
	src := filepath.Join(dir, "script")
	if err := os.WriteFile(src, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	installEchod(t, dir, src, 0o755)
}

// TestReloadUpgrade replaces the binary on disk with a new build, then
// reloads: the new daemon runs the new file.
func TestReloadUpgrade(t *testing.T) {
	dir := t.TempDir()
	pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755))
	exe := installEchod(t, dir, plainBin, 0o755) // another build: without the race detector
	syscall.Kill(pid, syscall.SIGHUP)
	next := awaitReload(t, dir, pid)
	running, _ := os.Stat(fmt.Sprintf("/proc/%d/exe", next))
	onDisk, _ := os.Stat(exe)
	if !os.SameFile(running, onDisk) {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", next))
		t.Errorf("the new daemon runs %s, not the new %s", link, exe)
	}
	assertOnly(t, dir, next, addr)
}

// TestReloadFails replaces the binary with things that are not a working
// echod: each reload fails, says why in the log, and the old daemon serves
// on, named by the PID file, with nothing else left running.
func TestReloadFails(t *testing.T) {
	for _, tc := range []struct{ name, script, why string }{
		{"exits", "#!/bin/sh\nexit 3\n", "exit status 3"},
		{"writes its pid, exits", "#!/bin/sh\necho $$ >&5\nexit 3\n", "exit status 3"}, // fd 5: the PID file
		{"not executable", "", "permission denied"},
		{"not echod", "#!/bin/sh\nexec sleep 60\n", "no word from it in 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.script, "sleep") {
				t.Parallel() // it waits the 10s
			}
			dir := t.TempDir()
			pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755))
			if tc.script != "" {
				installScript(t, dir, tc.script)
			} else {
				installEchod(t, dir, echodBin, 0o644)
			}
			syscall.Kill(pid, syscall.SIGHUP)
			log := awaitLog(t, dir, "reload failed")
			if !strings.Contains(log, tc.why) {
				t.Errorf("the log does not say %q:\n%s", tc.why, log)
			}
			assertOnly(t, dir, pid, addr)
		})
	}
}

// TestReloadBinaryGone removes the binary, as go run does once the first
// start has exited: the reload runs the running binary again, and says so.
func TestReloadBinaryGone(t *testing.T) {
	dir := t.TempDir()
	exe := installEchod(t, dir, echodBin, 0o755)
	pid, addr := echotest.StartDaemon(t, dir, exe)
	os.Remove(exe)
	syscall.Kill(pid, syscall.SIGHUP)
	next := awaitReload(t, dir, pid)
	awaitLog(t, dir, "running this binary again")
	assertOnly(t, dir, next, addr)
}

// slowReload starts a daemon in dir through slowStart, then sends it SIGHUP,
// and returns once the new daemon has started but waits for the test to
// remove dir/slow.
func slowReload(t *testing.T, dir string) (pid int, addr, childPID string) {
	t.Helper()
	exe, childPID := slowStart(t, dir, "while [ -e slow ]; do sleep 0.01; done")
	pid, addr = echotest.StartDaemon(t, dir, exe)
	os.WriteFile(filepath.Join(dir, "slow"), nil, 0o644)
	os.Remove(childPID)
	syscall.Kill(pid, syscall.SIGHUP)
	echotest.Poll(t, 5*time.Second, "no new daemon", func() bool { b, _ := os.ReadFile(childPID); return len(b) > 0 })
	return pid, addr, childPID
}

// TestReloadSlowNewDaemon serves a client on the old daemon while the new one
// starts slowly, then hands over: the old daemon must still see the Close of
// its listener, and exit.
func TestReloadSlowNewDaemon(t *testing.T) {
	dir := t.TempDir()
	pid, addr, _ := slowReload(t, dir)
	echotest.MustEcho(t, echotest.Dial(t, addr), []byte("served by the old daemon during the reload"))
	os.Remove(filepath.Join(dir, "slow"))
	next := awaitReload(t, dir, pid)
	echotest.WaitGone(t, pid)
	assertOnly(t, dir, next, addr)
}

// TestReloadLogRotation renames the log, as logrotate does, and reloads: the
// old daemon opens -log anew too, so the renamed file ends where the reload
// began, and the new one has both daemons' lines. Nothing is lost in between.
func TestReloadLogRotation(t *testing.T) {
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir)
	log, rotated := filepath.Join(dir, "echod.log"), filepath.Join(dir, "echod.log.1")
	os.Rename(log, rotated)
	next := reloadOnce(t, dir, pid)
	if old, _ := os.ReadFile(rotated); !strings.HasSuffix(string(old), fmt.Sprintf("msg=start addr=%s workers=64 pid=%d\n", addr, pid)) {
		t.Errorf("the rotated log is %q, want only the old daemon's start", old)
	}
	now := awaitLog(t, dir, fmt.Sprintf("msg=stop handed_over_to=%d", next))
	if !strings.Contains(now, fmt.Sprintf("msg=start addr=%s workers=64 pid=%d", addr, next)) {
		t.Errorf("the new log is %q, want the new daemon's start", now)
	}
}

// TestReloadFailsAfterRotation renames the log and installs a broken binary,
// then reloads with make: it prints the reason at once, from the new file at
// -log, where the old daemon goes on logging; make stop then stops it.
func TestReloadFailsAfterRotation(t *testing.T) {
	dir := t.TempDir()
	exe := installEchod(t, dir, echodBin, 0o755)
	pid, _ := echotest.StartDaemon(t, dir, exe, "-log", "echod.log", "-pidfile", "echod.pid")
	os.Rename(filepath.Join(dir, "echod.log"), filepath.Join(dir, "echod.log.1"))
	installScript(t, dir, "#!/bin/sh\nexit 3\n")
	begin := time.Now()
	_, errOut, code := makeIn(t, dir, "reload")
	if code == 0 || !strings.Contains(errOut, "reload failed") || time.Since(begin) > 3*time.Second {
		t.Errorf("make reload: exit %d after %v, stderr %q; want the reason within 3s", code, time.Since(begin), errOut)
	}
	if _, errOut, code := makeIn(t, dir, "stop"); code != 0 {
		t.Errorf("make stop: exit %d, %s", code, errOut)
	}
	echotest.WaitGone(t, pid)
	awaitLog(t, dir, "msg=stop")
}

// TestReloadTwice sends two more SIGHUPs while the new daemon starts: they
// coalesce into one more reload, once this one has ended, so the binary at
// the path when the last SIGHUP came runs.
func TestReloadTwice(t *testing.T) {
	dir := t.TempDir()
	pid, addr, _ := slowReload(t, dir)
	syscall.Kill(pid, syscall.SIGHUP)
	syscall.Kill(pid, syscall.SIGHUP)
	os.Remove(filepath.Join(dir, "slow"))
	var log []byte
	echotest.Poll(t, 15*time.Second, "not two reloads", func() bool {
		log, _ = os.ReadFile(filepath.Join(dir, "echod.log"))
		return bytes.Count(log, []byte("msg=stop handed_over_to=")) == 2
	})
	assertOnly(t, dir, echotest.ReadPID(t, filepath.Join(dir, "echod.pid")), addr)
	if n := bytes.Count(log, []byte("msg=start")); n != 3 {
		t.Errorf("%d starts in the log, want three:\n%s", n, log)
	}
}

// TestReloadThenStop sends SIGTERM right after SIGHUP, once while the new
// daemon is still starting and once at any moment: afterwards the PID file
// names a daemon that serves, or it is gone and nothing runs.
func TestReloadThenStop(t *testing.T) {
	t.Run("during start-up", func(t *testing.T) {
		dir := t.TempDir()
		pid, _, childPID := slowReload(t, dir)
		syscall.Kill(pid, syscall.SIGTERM)
		echotest.WaitGone(t, pid)
		echotest.WaitGone(t, echotest.ReadPID(t, childPID))
		if _, err := os.Stat(filepath.Join(dir, "echod.pid")); err == nil {
			t.Error("PID file left, naming nobody")
		}
		if left := echotest.Running(dir); len(left) > 0 {
			t.Errorf("left running: %v", left)
		}
	})
	t.Run("at once", func(t *testing.T) {
		dir := t.TempDir()
		pid, addr := launchDaemon(t, dir)
		syscall.Kill(pid, syscall.SIGHUP)
		syscall.Kill(pid, syscall.SIGTERM)
		echotest.WaitGone(t, pid)
		b, err := os.ReadFile(filepath.Join(dir, "echod.pid"))
		if err != nil {
			if left := echotest.Running(dir); len(left) > 0 {
				t.Errorf("PID file gone, but %v run", left)
			}
			return
		}
		var next int
		fmt.Sscan(string(b), &next)
		assertOnly(t, dir, next, addr)
	})
}

// TestReloadStopPending holds the new daemon at start, stops the old one
// (SIGSTOP, as a loaded machine would), lets the new one say ready, sends
// SIGTERM and resumes the old one: whichever of the two it sees first, both
// daemons stop, the PID file goes, and the log never says "serving on".
func TestReloadStopPending(t *testing.T) {
	t.Parallel() // it mostly waits
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			dir := t.TempDir()
			pid, _, childPID := slowReload(t, dir)
			syscall.Kill(pid, syscall.SIGSTOP)
			os.Remove(filepath.Join(dir, "slow"))
			child := echotest.ReadPID(t, childPID)
			awaitLog(t, dir, fmt.Sprintf("pid=%d", child)) // its start line: it has written "ready"
			syscall.Kill(pid, syscall.SIGTERM)
			syscall.Kill(pid, syscall.SIGCONT)
			t.Cleanup(func() {
				if t.Failed() {
					b, _ := os.ReadFile(filepath.Join(dir, "echod.log"))
					t.Logf("log:\n%s", b)
				}
			})
			echotest.WaitGone(t, pid)
			echotest.WaitGone(t, child)
			if _, err := os.Stat(filepath.Join(dir, "echod.pid")); err == nil {
				t.Error("PID file left behind")
			}
			if log := awaitLog(t, dir, "msg=stop"); strings.Contains(log, "serving on") {
				t.Errorf("the log says the old daemon serves on:\n%s", log)
			}
			if left := echotest.Running(dir); len(left) > 0 {
				t.Errorf("left running: %v", left)
			}
		})
	}
}

// TestMakeReload reloads through the Makefile: it waits for the new daemon
// and names it, or shows the log's reason for a failure. The daemon's files
// are not where make runs: PIDFILE and LOG name them.
func TestMakeReload(t *testing.T) {
	t.Parallel() // it mostly waits
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o755)
	exe := installEchod(t, dir, echodBin, 0o755)
	pid, addr := echotest.StartDaemon(t, dir, exe, "-log", "run/echod.log", "-pidfile", "run/echod.pid")
	reload := []string{"reload", "PIDFILE=run/echod.pid", "LOG=run/echod.log"}
	out, errOut, code := makeIn(t, dir, reload...)
	next := echotest.ReadPID(t, filepath.Join(run, "echod.pid"))
	if want := fmt.Sprintf("echod: reloaded: pid %d, now %d\n", pid, next); code != 0 || out != want {
		t.Errorf("make reload: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
	installScript(t, dir, "#!/bin/sh\necho $$ >&5\nsleep 0.5\nexit 3\n") // it writes its pid first, then fails
	_, errOut, code = makeIn(t, dir, reload...)
	if code == 0 || !strings.Contains(errOut, "reload failed") || !strings.Contains(errOut, "exit status 3") {
		t.Errorf("make reload of a broken binary: exit %d, stderr %q", code, errOut)
	}
	assertOnly(t, run, next, addr)
}
