package main

import (
	"bytes"
	"echod/internal/echotest"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() { adopt = echotest.Adopt }

// runEchod runs echod, the daemon's parent, in dir, and returns what it printed.
func runEchod(t *testing.T, dir string, extra []*os.File, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(echodBin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Dir, cmd.ExtraFiles = dir, extra
	echotest.CleanupDaemons(t, dir)
	return echotest.RunCmd(t, cmd)
}

// TestDaemon checks the post's four steps on the running daemon through
// /proc, and that SIGHUP leaves it serving and SIGTERM stops it.
func TestDaemon(t *testing.T) {
	dir, work := t.TempDir(), t.TempDir()
	pid, addr := echotest.StartDaemon(t, dir, echodBin, "-dir", work, "--") // -log, -pidfile: in dir
	st, self := echotest.ProcStat(pid), echotest.ProcStat(os.Getpid())
	if st[3] != strconv.Itoa(pid) || st[3] == self[3] { // ② its own session
		t.Errorf("session %s, want its own (%d); the test's is %s", st[3], pid, self[3])
	}
	if st[2] != strconv.Itoa(pid) || st[2] == self[2] {
		t.Errorf("process group %s, want its own (%d); the test's is %s", st[2], pid, self[2])
	}
	if st[1] != strconv.Itoa(os.Getpid()) { // the test is a subreaper (see adopt)
		t.Errorf("ppid %s, want the test's (%d): its parent has exited", st[1], os.Getpid())
	}
	link := func(name string) string { l, _ := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, name)); return l }
	for name, want := range map[string]string{ // ③ and ④
		"cwd": work, "fd/0": "/dev/null", "fd/1": "/dev/null", "fd/2": filepath.Join(dir, "echod.log"),
	} {
		if got := link(name); got != want {
			t.Errorf("%s -> %q, want %q", name, got, want)
		}
	}
	if got := echotest.ReadPID(t, filepath.Join(dir, "echod.pid")); got != pid {
		t.Errorf("PID file holds %d, the parent printed %d", got, pid)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) != "echod\n" {
		t.Errorf("comm %q, want echod", comm)
	}

	// ① SIGPIPE, SIGHUP and the job-control stops are ignored (bit sig-1).
	ign := echotest.SigMask(t, pid, "SigIgn")
	for _, sig := range []syscall.Signal{syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU} {
		if ign&(1<<(sig-1)) == 0 {
			t.Errorf("%v is not ignored (SigIgn %016x)", sig, ign)
		}
	}
	syscall.Kill(pid, syscall.SIGHUP)
	echotest.MustEcho(t, echotest.Dial(t, addr), []byte("a daemon, after a SIGHUP"))

	syscall.Kill(pid, syscall.SIGTERM)
	echotest.WaitGone(t, pid)
	if _, err := os.Stat(filepath.Join(dir, "echod.pid")); !os.IsNotExist(err) {
		t.Errorf("PID file left after SIGTERM: %v", err)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "echod.log")); !bytes.Contains(log, []byte("msg=stop")) {
		t.Errorf("no stop line in the log:\n%s", log)
	}
}

func TestDaemonLeavesTerminal(t *testing.T) { echotest.DaemonLeavesTerminal(t, echodBin) }

func TestDaemonLeaksNoDescriptor(t *testing.T) {
	echotest.DaemonLeaksNoDescriptor(t, func(dir string, extra []*os.File) (string, string, int) {
		return runEchod(t, dir, extra)
	})
}

// TestDaemonStartFails covers failures in the parent and in the daemon:
// exit 1, one line on stderr that names the problem, nothing left running,
// and no file left that was not there before.
func TestDaemonStartFails(t *testing.T) {
	taken := startServer(t).Addr
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)
	fifo := filepath.Join(t.TempDir(), "fifo") // not /dev/full: a daemon that took it would remove it
	syscall.Mkfifo(fifo, 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"port taken", []string{"-addr", taken}, "address already in use"},
		{"bad log", []string{"-log", "/nonexistent/echod.log"}, "open /nonexistent/echod.log: no such file"},
		{"no dir", []string{"-dir", "/nonexistent"}, "chdir /nonexistent: no such file or directory"},
		{"dir is a file", []string{"-dir", notDir}, "chdir " + notDir + ": not a directory"},
		{"PID file a FIFO", []string{"-pidfile", fifo}, "-pidfile " + fifo + ": not a regular file"},
		{"PID file cannot be written", []string{"-pidfile", "/proc/version"}, "/proc/version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, errOut, code := runEchod(t, dir, nil, tc.args...)
			if code != 1 || !strings.HasPrefix(errOut, "echod: ") || !strings.Contains(errOut, tc.want) ||
				strings.Count(errOut, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 1 and one line with %q", code, errOut, tc.want)
			}
			echotest.AssertEmpty(t, dir)
		})
	}
}

// TestDaemonDiesInStartUp fills the disk under the PID file (prlimit
// --fsize), so that the daemon cannot write its pid: it says why, its parent
// prints it and exits 1, and the files it made are gone.
func TestDaemonDiesInStartUp(t *testing.T) {
	echotest.NeedTool(t, "prlimit", "util-linux")
	dir := t.TempDir()
	echotest.CleanupDaemons(t, dir)
	cmd := exec.Command("prlimit", "--fsize=2", echodBin, "-addr", "127.0.0.1:0")
	cmd.Dir = dir
	_, errOut, code := echotest.RunCmd(t, cmd)
	if code != 1 || !strings.HasPrefix(errOut, "echod: ") || !strings.Contains(errOut, "file too large") {
		t.Errorf("exit %d, stderr %q; want 1 and the reason", code, errOut)
	}
	echotest.AssertEmpty(t, dir)
}

// TestPIDFile starts a second echod on the same PID file, which is refused
// and names the first; then one over a stale file that names a live
// stranger, as a crashed daemon's does once its pid is reused.
func TestPIDFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GOGC", "1") // the daemon collects garbage often: the lock must outlive it
	pid, addr := echotest.StartDaemon(t, dir, echodBin)
	for range 50 {
		echotest.MustEcho(t, echotest.Dial(t, addr), echotest.Random(64<<10))
	}
	_, errOut, code := runEchod(t, dir, nil)
	if want := fmt.Sprintf("echod: already running as pid %d (", pid); code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("second start: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	echotest.WaitGone(t, pid)

	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stranger.Process.Kill(); stranger.Wait() }()
	pidfile := filepath.Join(dir, "echod.pid")
	os.WriteFile(pidfile, []byte(fmt.Sprintln(stranger.Process.Pid)+"123456789\n"), 0o644)
	pid, _ = echotest.StartDaemon(t, dir, echodBin)
	if b, _ := os.ReadFile(pidfile); string(b) != fmt.Sprintln(pid) {
		t.Errorf("PID file holds %q, want %d and nothing else", b, pid)
	}
}

func TestLockPIDFollowsRemoval(t *testing.T) { echotest.LockFollowsRemoval(t, lockPID) }

// TestMake runs make ps and make stop on a daemon, from another directory,
// then make stop on a stale PID file that names a stranger, which it spares.
func TestMake(t *testing.T) {
	dir, wd := t.TempDir(), must(os.Getwd())
	pidfile := filepath.Join(dir, "echod.pid")
	pid, _ := echotest.StartDaemon(t, dir, echodBin)
	makefile := filepath.Join(wd, "Makefile")
	out, errOut, code := echotest.Make(t, makefile, t.TempDir(), "ps", "PIDFILE="+pidfile)
	if code != 0 || !strings.Contains(out, strconv.Itoa(pid)) || !strings.Contains(out, "SID") {
		t.Errorf("make ps: exit %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := echotest.Make(t, makefile, dir, "stop"); code != 0 || echotest.Alive(pid) {
		t.Fatalf("make stop: exit %d, %q; the daemon alive: %v", code, errOut, echotest.Alive(pid))
	}
	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stranger.Process.Kill(); stranger.Wait() }()
	os.WriteFile(pidfile, []byte(fmt.Sprintln(stranger.Process.Pid)), 0o644)
	for _, target := range []string{"stop", "ps"} {
		_, errOut, code := echotest.Make(t, makefile, dir, target)
		if code == 0 || !strings.Contains(errOut, "echod: not running (stale echod.pid)") {
			t.Errorf("make %s: exit %d, stderr %q", target, code, errOut)
		}
	}
	if !echotest.Alive(stranger.Process.Pid) {
		t.Error("make killed a stranger")
	}
}

// TestPostClient builds the post's own C++ client (testdata/tcpclient.cc, as
// the post prints it) and talks to the daemon through it, a line at a time.
func TestPostClient(t *testing.T) {
	echotest.NeedTool(t, "g++", "g++")
	bin := filepath.Join(t.TempDir(), "tcpclient")
	if out, err := exec.Command("g++", "-o", bin, "testdata/tcpclient.cc").CombinedOutput(); err != nil {
		t.Fatalf("g++: %v\n%s", err, out)
	}
	dir := t.TempDir()
	_, addr := echotest.StartDaemon(t, dir, echodBin, "-idle", "1s")
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(bin, host, port)
	cmd.Stdin = strings.NewReader("hello\n你好, daemon\n")
	var out echotest.SyncBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }() // at the end of its input, it goes on asking
	want := "Please enter#hello\nPlease enter#你好, daemon\n"
	echotest.Poll(t, 10*time.Second, "the post's client did not get both lines back", func() bool {
		return strings.HasPrefix(out.String(), want)
	})
}

// TestDaemonOrphaned runs echod as a daemon whose parent is gone, as it is
// when its parent was killed while it started: it must stop, not start a
// daemon of its own.
func TestDaemonOrphaned(t *testing.T) {
	dir := t.TempDir()
	echotest.CleanupDaemons(t, dir)
	cmd := exec.Command(echodBin, "-addr", "127.0.0.1:0")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "_ECHOD_PARENT=1") // not our pid
	_, errOut, code := echotest.RunCmd(t, cmd)
	if want := "echod: the echod that started this daemon is gone\n"; code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	echotest.AssertEmpty(t, dir)
}

// TestDaemonStartOutput starts echod with GODEBUG=inittrace=1, so that the
// daemon's runtime writes to its stderr before it is ready: the parent shows
// that, and still knows that the daemon serves.
func TestDaemonStartOutput(t *testing.T) {
	dir := t.TempDir()
	echotest.CleanupDaemons(t, dir)
	cmd := exec.Command(echodBin, "-addr", "127.0.0.1:0")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "GODEBUG=inittrace=1")
	out, errOut, code := echotest.RunCmd(t, cmd)
	if code != 0 || !strings.Contains(out, "listening on 127.0.0.1:") || !strings.Contains(errOut, "init ") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0, the daemon's address and its init trace", code, out, errOut)
	}
}

// TestDaemonLogFIFO gives echod a FIFO that nobody reads for its log: the
// start fails and says why, where opening it would wait for a reader.
func TestDaemonLogFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "log")
	syscall.Mkfifo(fifo, 0o644)
	_, errOut, code := runEchod(t, dir, nil, "-log", fifo)
	if code != 1 || !strings.Contains(errOut, "no such device or address") {
		t.Errorf("exit %d, stderr %q; want 1 and ENXIO", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "echod.pid")); err == nil {
		t.Error("the failed start left echod.pid")
	}
}
