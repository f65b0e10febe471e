package main

import (
	"bytes"
	"echod/internal/echotest"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests of 热重启 at its edges: who gets a stop, every SIGHUP, what a
// failed new daemon leaves, the order of moves, and what travels with them.

// reloadWhileStuck starts a daemon in dir with -grace grace, connects a client
// that sends and never reads, waits until its worker is stuck in a Write, and
// reloads: the old daemon waits on that client, up to grace, while the new one
// serves.
func reloadWhileStuck(t *testing.T, dir, grace string) (old, next int, addr string) {
	t.Helper()
	old, addr = launchDaemon(t, dir, "-grace", grace)
	stuck := echotest.Dial(t, addr)
	go stuck.Write(echotest.Random(16 << 20))
	awaitStuck(t, stuck)
	syscall.Kill(old, syscall.SIGHUP)
	return old, awaitReload(t, dir, old), addr
}

// TestReloadStopBoth signals a stop to both daemons in the middle of a move,
// as systemd's KillMode=control-group does: the old one waits on a client
// that does not read, and the new one serves a client that sends a line
// every 0.25s. The new daemon stops gracefully, once: its client is served
// for -grace after the stop, well past the old daemon's cut, and then the PID
// file goes.
func TestReloadStopBoth(t *testing.T) {
	t.Parallel() // it mostly waits for -grace
	dir := t.TempDir()
	pid, next, addr := reloadWhileStuck(t, dir, "4s")
	oldCut := time.Now().Add(4 * time.Second) // the old daemon cuts what it has not moved by then
	c := echotest.Dial(t, addr)
	time.Sleep(2 * time.Second) // so that the new daemon's -grace ends 2s after the old one's cut
	syscall.Kill(pid, syscall.SIGTERM)
	syscall.Kill(next, syscall.SIGTERM)
	for i := 0; time.Now().Before(oldCut.Add(time.Second)); i++ {
		if err := roundTrip(c, fmt.Appendf(nil, "line %d\n", i)); err != nil {
			t.Fatalf("line %d, %v after the old daemon's cut: %v", i, time.Since(oldCut), err)
		}
		time.Sleep(250 * time.Millisecond) // a client that types
	}
	echotest.WaitGone(t, pid)
	echotest.Poll(t, 10*time.Second, "the new daemon did not stop", func() bool { return !echotest.Alive(next) })
	if _, err := os.Stat(filepath.Join(dir, "echod.pid")); err == nil {
		t.Error("PID file left behind")
	}
	if log := awaitLog(t, dir, "msg=stop cut="); strings.Contains(log, "at once") || !strings.Contains(log, "msg=stopping") {
		t.Errorf("want one graceful stop:\n%s", log)
	}
}

// TestReloadDuringReload renames the log, as logrotate does, and installs a
// new build while a reload is still starting the new daemon, then sends
// SIGHUP again: once that reload is done, one more runs. The last daemon runs
// the new build and writes into the file at -log.
func TestReloadDuringReload(t *testing.T) {
	dir := t.TempDir()
	pid, addr, _ := slowReload(t, dir)
	os.Rename(filepath.Join(dir, "echod.log"), filepath.Join(dir, "echod.log.1"))
	exe := installEchod(t, dir, plainBin, 0o755)
	syscall.Kill(pid, syscall.SIGHUP)
	os.Remove(filepath.Join(dir, "slow"))
	var last int
	echotest.Poll(t, 15*time.Second, "the new build never ran", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "echod.pid"))
		fmt.Sscan(string(b), &last)
		running, _ := os.Stat(fmt.Sprintf("/proc/%d/exe", last))
		onDisk, _ := os.Stat(exe)
		return os.SameFile(running, onDisk)
	})
	awaitLog(t, dir, fmt.Sprintf("msg=start addr=%s workers=64 pid=%d", addr, last))
	assertOnly(t, dir, last, addr)
}

// TestReloadFailsWithChildren reloads into a wrapper script that starts a
// child, which keeps the listener and the PID file, and then fails. The child
// goes with it; once the daemon stops, the port is free.
func TestReloadFailsWithChildren(t *testing.T) {
	dir := t.TempDir()
	pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755))
	script := "#!/bin/sh\nsleep 60 4>&- &\necho $! > %s\nexit 3\n" // 4>&-: the socket pair, or we would wait 10s
	installScript(t, dir, fmt.Sprintf(script, filepath.Join(dir, "child.pid")))
	syscall.Kill(pid, syscall.SIGHUP)
	awaitLog(t, dir, "reload failed")
	child := echotest.ReadPID(t, filepath.Join(dir, "child.pid"))
	echotest.Poll(t, 5*time.Second, "the failed daemon's child still runs", func() bool { return !echotest.Alive(child) })
	syscall.Kill(pid, syscall.SIGTERM)
	echotest.WaitGone(t, pid)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port is still taken: %v", err)
	}
	ln.Close()
}

// TestReloadNoGrace reloads with -grace 0 and eight idle clients: each moves,
// since -grace bounds only a Write that blocks.
func TestReloadNoGrace(t *testing.T) {
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir, "-grace", "0")
	var conns []*net.TCPConn
	for range 8 {
		c := echotest.Dial(t, addr)
		if err := roundTrip(c, []byte("open")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	next := reloadOnce(t, dir, pid)
	for i, c := range conns {
		if err := roundTrip(c, []byte("moved")); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if log := awaitLog(t, dir, "msg=stop"); !strings.Contains(log, fmt.Sprintf("handed_over_to=%d moved=8 cut=0", next)) {
		t.Errorf("want 8 moved:\n%s", log)
	}
}

// TestReloadOutOfDescriptors reloads 30 clients into a new daemon that may
// open only 20 files: what it cannot take it says, in a WARN line with the
// count and the reason, and closes, so that no client hangs.
func TestReloadOutOfDescriptors(t *testing.T) {
	echotest.NeedTool(t, "prlimit", "util-linux")
	dir := t.TempDir()
	pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755))
	conns := make([]*net.TCPConn, 30)
	for i := range conns {
		if conns[i] = echotest.Dial(t, addr); roundTrip(conns[i], []byte("open")) != nil {
			t.Fatal("no echo")
		}
	}
	installScript(t, dir, fmt.Sprintf("#!/bin/sh\nexec prlimit --nofile=20:20 %s \"$@\"\n", echodBin))
	reloadOnce(t, dir, pid)
	served := 0
	for i, c := range conns {
		switch err := roundTrip(c, []byte("moved")); {
		case err == nil:
			served++
		case echotest.IsTimeout(err):
			t.Errorf("client %d hangs", i)
		}
	}
	log := awaitLog(t, dir, "their clients see EOF") // after all moved in: each client has had its answer
	var took, lost int
	if i := strings.Index(log, "moved in\" conns="); i >= 0 {
		fmt.Sscanf(log[i:], "moved in\" conns=%d", &took)
	}
	if i := strings.Index(log, "their clients see EOF\" conns="); i >= 0 {
		fmt.Sscanf(log[i:], "their clients see EOF\" conns=%d", &lost)
	}
	failed := strings.Count(log, "could not take a moved connection") // a copy FileConn could not make
	if took+lost != 30 || lost == 0 || served+failed != took || !strings.Contains(log, "level=WARN") {
		t.Errorf("took %d, lost %d, served %d, failed %d; want 30 in all, each taken one served or failed:\n%s",
			took, lost, served, failed, log)
	}
}

// TestReloadKeepsOrder runs one worker: a client in service holds it, and
// three queued clients have each sent a byte. After a reload, the client in
// service still has the new daemon's worker, and the queue is served in the
// order it was accepted. A race between workers got this wrong 2 runs in 3.
func TestReloadKeepsOrder(t *testing.T) {
	t.Parallel() // it mostly waits
	for range 4 {
		dir := t.TempDir()
		pid, _, held, queued := heldAndQueued(t, dir)
		pid = reloadOnce(t, dir, pid)
		if err := roundTrip(held, []byte("still served")); err != nil {
			t.Fatalf("the client in service lost its worker: %v", err)
		}
		held.Close()
		for i, c := range queued {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatalf("queued client %d, served in turn: %v", i, err)
			}
			c.Close()
		}
	}
}

// TestReloadSecondStop sends two SIGTERMs to the new daemon while the old
// one still waits on a client that does not read: the second cuts at once,
// and the new daemon takes nothing more and goes, without waiting for the
// old daemon's -grace.
func TestReloadSecondStop(t *testing.T) {
	t.Parallel() // the old daemon waits out its -grace at the end
	dir := t.TempDir()
	_, next, _ := reloadWhileStuck(t, dir, "20s")
	syscall.Kill(next, syscall.SIGTERM)
	awaitLog(t, dir, "msg=stopping")
	syscall.Kill(next, syscall.SIGTERM)
	begin := time.Now()
	echotest.Poll(t, 15*time.Second, "the new daemon did not go", func() bool { return !echotest.Alive(next) })
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("the new daemon took %v to go after the second SIGTERM", d)
	}
	awaitLog(t, dir, `msg="stopping at once"`)
}

// TestDaemonBareName starts echod as a shell's `exec -a echod` does: argv[0]
// is a bare name that is not in PATH. It runs its own binary again, says so
// on the terminal, and serves.
func TestDaemonBareName(t *testing.T) {
	dir := t.TempDir()
	echotest.CleanupDaemons(t, dir)
	cmd := exec.Command("bash", "-c", `exec -a echod "$0" -addr 127.0.0.1:0`, echodBin)
	cmd.Dir = dir
	out, errOut, code := echotest.RunCmd(t, cmd)
	var pid int
	var addr string
	if _, err := fmt.Sscanf(out, "echod: daemon pid %d listening on %s (log ", &pid, &addr); err != nil || code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	echotest.MustEcho(t, echotest.Dial(t, addr), []byte("served"))
	if !strings.Contains(errOut, "running this binary again") {
		t.Errorf("stderr %q does not say that it runs itself again", errOut)
	}
}

// TestReloadBinaryGoneThenBack removes the binary and reloads, so the new
// daemon runs itself again, then installs a new build at the path: the next
// reload runs that, since the path, not /proc/self/exe, is the one to run.
func TestReloadBinaryGoneThenBack(t *testing.T) {
	dir := t.TempDir()
	exe := installEchod(t, dir, echodBin, 0o755)
	pid, addr := echotest.StartDaemon(t, dir, exe)
	os.Remove(exe)
	next := reloadOnce(t, dir, pid)
	installEchod(t, dir, plainBin, 0o755)
	last := reloadOnce(t, dir, next)
	running, _ := os.Stat(fmt.Sprintf("/proc/%d/exe", last))
	if onDisk, _ := os.Stat(exe); !os.SameFile(running, onDisk) {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", last))
		t.Errorf("the last daemon runs %s, not the new %s", link, exe)
	}
	assertOnly(t, dir, last, addr)
}

// TestReloadStartDirGone starts echod from a directory, with relative paths,
// and removes the directory: a reload still works, since every path was
// made absolute at the first start.
func TestReloadStartDirGone(t *testing.T) {
	dir := t.TempDir()
	echotest.CleanupDaemons(t, dir)
	start := filepath.Join(dir, "start")
	os.Mkdir(start, 0o755)
	pid, addr := echotest.StartDaemon(t, start, echodBin, "-log", "../echod.log", "-pidfile", "../echod.pid")
	os.Remove(start)
	next := reloadOnce(t, dir, pid)
	assertOnly(t, dir, next, addr)
	awaitLog(t, dir, fmt.Sprintf("handed_over_to=%d", next)) // the old daemon opened ../echod.log anew, where it was
}

// TestReloadKeepsIdleClock reloads every so often while a client is silent:
// -idle counts from when it was last heard, not from the last move.
func TestReloadKeepsIdleClock(t *testing.T) {
	t.Parallel() // it mostly waits
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir, "-idle", "2s")
	c := echotest.Dial(t, addr)
	if err := roundTrip(c, []byte("heard")); err != nil {
		t.Fatal(err)
	}
	heard, last := time.Now(), time.Time{}
	for time.Since(heard) < 2500*time.Millisecond {
		pid = reloadOnce(t, dir, pid)
		last = time.Now()
	}
	// A clock that began anew at each move cuts 9/8 of -idle after the last one: that is too late. A clock that
	// counts the client's silence cut it 9/8 of -idle after heard, plus the moments no worker held it (never
	// counted: in a move, in a queue); the more reloads a loaded machine makes slow, the more of those, and the
	// later the last reload too.
	c.SetReadDeadline(last.Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
		t.Errorf("the silent client was not cut %v after the last reload, %v after it was last heard: %v",
			2*time.Second, time.Since(heard).Round(time.Millisecond), err)
	}
}

// TestForegroundCtrlC presses Ctrl-C twice with a client open: the first
// says what is open and how long it has, the second what it cut, and either
// way the stop is clean: exit 0, and the PID file goes.
func TestForegroundCtrlC(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "echod.pid")
	s := startServer(t, "-grace", "20s", "-pidfile", pidfile)
	busy := echotest.Dial(t, s.Addr)
	if err := roundTrip(busy, []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Cmd.Process.Signal(syscall.SIGINT)
	echotest.Poll(t, 5*time.Second, "no stopping line", func() bool { return strings.Contains(s.Log(), "msg=stopping open=1 grace=20s") })
	s.Cmd.Process.Signal(syscall.SIGINT)
	s.Wait(t, 5*time.Second)
	if log := s.Log(); !strings.Contains(log, `msg="stopping at once" open=1`) || !strings.Contains(log, "msg=stop cut=1") {
		t.Errorf("want the second Ctrl-C's line and what it cut:\n%s", log)
	}
	if _, err := os.Stat(pidfile); err == nil {
		t.Error("PID file left behind")
	}
}

// TestClientBadHost: a host that no retry can mend is a usage error.
func TestClientBadHost(t *testing.T) {
	for _, host := range []string{"300.1.1.1", "[::1", "::1]", "1.2.3", "", "::1%", "[::1%]"} { // ::1%: an empty zone
		_, errOut, code := runClient(t, "", host, "8080")
		if code != 2 || !strings.HasPrefix(errOut, "client: ") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a usage line", host, code, errOut)
		}
	}
	for _, host := range []string{"[::1]", "::1%lo", "localhost"} { // an address, one with a zone, a name
		if _, errOut, code := runClient(t, "hi\n", "-retries", "0", host, "1"); code != 1 {
			t.Errorf("%s: exit %d, %q; want 1, a connect that failed", host, code, errOut)
		}
	}
}

// TestReloadStopDuringStart sends SIGTERM to the old daemon after the new one
// has written its pid, but before it says ready (a stand-in that never does).
// The old daemon kills the new one and stops gracefully, a client open for
// -grace; all the while the PID file names a live daemon, then goes.
func TestReloadStopDuringStart(t *testing.T) {
	t.Parallel() // it mostly waits for -grace
	dir := t.TempDir()
	pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755), "-grace", "2s")
	if err := roundTrip(echotest.Dial(t, addr), []byte("open")); err != nil {
		t.Fatal(err)
	}
	test, _ := os.Executable() // it runs as the new daemon
	installScript(t, dir, fmt.Sprintf("#!/bin/sh\n%s=silent exec %s \"$@\"\n", deadEndEnv, test))
	syscall.Kill(pid, syscall.SIGHUP)
	pidfile := filepath.Join(dir, "echod.pid")
	echotest.Poll(t, 10*time.Second, "no new pid in the PID file", func() bool { return echotest.ReadPID(t, pidfile) != pid })
	syscall.Kill(pid, syscall.SIGTERM)
	// Between the kill of the new daemon and the rewrite, the file names a dead pid for a moment (its reaping, and
	// the loop's turn: tens of ms under -race in a parallel run); without the rewrite, for the whole -grace.
	var since time.Time // since when the file has named a dead pid
	for end := time.Now().Add(15 * time.Second); echotest.Alive(pid) && time.Now().Before(end); {
		b, err := os.ReadFile(pidfile)
		var named int
		if fmt.Sscan(string(b), &named); err != nil || named <= 0 || echotest.Alive(named) {
			since = time.Time{}
		} else if since.IsZero() {
			since = time.Now()
		} else if time.Since(since) > 500*time.Millisecond {
			t.Fatalf("the PID file names %d, gone for %v; the old daemon %d still runs", named, time.Since(since), pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	echotest.WaitGone(t, pid)
	if _, err := os.Stat(pidfile); err == nil {
		t.Error("PID file left behind")
	}
}

// TestReloadStopPassedThenOwn stops the old daemon as it hands over, so that it passes `stop 1` on, and then the new
// daemon by a signal of its own, as KillMode=control-group does in either order: one graceful stop, its client served
// on within -grace, not a stop at once. (The new daemon added its own signal to the 1 it was told, and cut.)
func TestReloadStopPassedThenOwn(t *testing.T) {
	t.Parallel() // it mostly waits for -grace
	for try := 1; ; try++ {
		dir := t.TempDir()
		pid, addr := launchDaemon(t, dir, "-grace", "3s")
		c := echotest.Dial(t, addr)
		if err := roundTrip(c, []byte("before the reload\n")); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(pid, syscall.SIGHUP)
		next := awaitReload(t, dir, pid)
		syscall.Kill(pid, syscall.SIGTERM) // in its handover or the 50 ms after it: it passes the stop on
		log := filepath.Join(dir, "echod.log")
		if !echotest.Until(2*time.Second, func() bool { b, _ := os.ReadFile(log); return bytes.Contains(b, []byte("msg=stopping")) }) {
			if try == 3 { // the old daemon was gone before its SIGTERM each time (a loaded machine)
				t.Fatal("the new daemon was never told to stop")
			}
			continue
		}
		syscall.Kill(next, syscall.SIGTERM)
		if err := roundTrip(c, []byte("after both stops, within -grace\n")); err != nil {
			t.Errorf("the client was cut: %v", err)
		}
		echotest.WaitGone(t, next)
		if b, _ := os.ReadFile(log); bytes.Contains(b, []byte("stopping at once")) {
			t.Errorf("want one graceful stop:\n%s", b)
		}
		return
	}
}

// TestReloadStopNoGraceDuringStart stops the old daemon, with -grace 0, while its new daemon starts: the stop ends
// the start, and the old daemon stops as any stop does, its log says so and the PID file goes. (-grace's timer fires
// before the start has ended; the loop took it for the end of a handover's linger, and left without either.)
func TestReloadStopNoGraceDuringStart(t *testing.T) {
	t.Parallel() // it mostly waits
	dir := t.TempDir()
	exe, childPID := slowStart(t, dir, "while [ -e slow ]; do sleep 0.01; done")
	pid, _ := echotest.StartDaemon(t, dir, exe, "-grace", "0")
	os.WriteFile(filepath.Join(dir, "slow"), nil, 0o644)
	syscall.Kill(pid, syscall.SIGHUP)
	echotest.Poll(t, 5*time.Second, "no new daemon", func() bool { b, _ := os.ReadFile(childPID); return len(b) > 0 })
	child := echotest.ReadPID(t, childPID)
	syscall.Kill(pid, syscall.SIGTERM)
	echotest.WaitGone(t, pid)
	echotest.WaitGone(t, child)
	if _, err := os.Stat(filepath.Join(dir, "echod.pid")); err == nil {
		t.Error("PID file left behind")
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "echod.log")); !bytes.Contains(log, []byte("msg=stop ")) {
		t.Errorf("the log does not say stop:\n%s", log)
	}
}

// TestReloadStopBeforeHUP sends SIGHUP, and while the new daemon starts,
// SIGHUP and SIGTERM: the stop ends the start, and comes before the SIGHUP
// that waited with it, so the old daemon stops without starting another.
func TestReloadStopBeforeHUP(t *testing.T) {
	t.Parallel()  // it mostly waits
	for range 4 { // the loop's select picks at random among ready channels
		dir := t.TempDir()
		pid, _, childPID := slowReload(t, dir)
		child := echotest.ReadPID(t, childPID)
		syscall.Kill(pid, syscall.SIGHUP)
		syscall.Kill(pid, syscall.SIGTERM)
		echotest.Poll(t, 5*time.Second, "the old daemon did not stop", func() bool { return !echotest.Alive(pid) })
		if again := echotest.ReadPID(t, childPID); again != child {
			t.Fatalf("the old daemon started another new daemon, %d, after the stop", again)
		}
	}
}
