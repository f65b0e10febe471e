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

// runEchod runs echod (the daemon's parent) from dir and returns what it printed.
func runEchod(t *testing.T, dir string, extra []*os.File, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(echodBin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Dir, cmd.ExtraFiles = dir, extra
	echotest.CleanupDaemons(t, dir)
	return echotest.RunCmd(t, cmd)
}

// launchDaemon starts echod in daemon mode from dir and returns the pid and
// address that the parent printed.
func launchDaemon(t *testing.T, dir string, args ...string) (pid int, addr string) {
	t.Helper()
	return echotest.StartDaemon(t, dir, echodBin, args...)
}

func init() { adopt = echotest.Adopt }

// TestDaemon checks the post's four steps on the running daemon through /proc.
func TestDaemon(t *testing.T) {
	dir, work := t.TempDir(), t.TempDir()
	pid, addr := launchDaemon(t, dir, "-dir", work) // -log and -pidfile are relative to dir
	st, self := echotest.ProcStat(pid), echotest.ProcStat(os.Getpid())
	if st[3] != strconv.Itoa(pid) || st[3] == self[3] {
		t.Errorf("session %s, want its own (%d); the test's is %s", st[3], pid, self[3])
	}
	if st[2] != strconv.Itoa(pid) || st[2] == self[2] {
		t.Errorf("process group %s, want its own (%d); the test's is %s", st[2], pid, self[2])
	}
	if st[1] != strconv.Itoa(os.Getpid()) { // the test is a subreaper (see adopt)
		t.Errorf("ppid %s, want the test's (%d): once the parent that printed has exited, its orphan is the test's, a subreaper", st[1], os.Getpid())
	}
	link := func(name string) string { l, _ := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, name)); return l }
	for name, want := range map[string]string{
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

	// ① SIGPIPE and the job-control stops are ignored (bit sig-1 of SigIgn);
	// SIGHUP is caught, for a reload, and SIGCHLD is left alone.
	ign, cgt := echotest.SigMask(t, pid, "SigIgn"), echotest.SigMask(t, pid, "SigCgt")
	for _, sig := range []syscall.Signal{syscall.SIGPIPE, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU} {
		if ign&(1<<(sig-1)) == 0 {
			t.Errorf("%v is not ignored (SigIgn %016x)", sig, ign)
		}
	}
	if bit := uint64(1) << (syscall.SIGHUP - 1); ign&bit != 0 || cgt&bit == 0 {
		t.Errorf("SIGHUP is not caught (SigIgn %016x, SigCgt %016x)", ign, cgt)
	}
	if ign&(1<<(syscall.SIGCHLD-1)) != 0 {
		t.Errorf("SIGCHLD is ignored: a reload's Wait would fail (SigIgn %016x)", ign)
	}
	echotest.MustEcho(t, echotest.Dial(t, addr), []byte("a daemon"))

	syscall.Kill(pid, syscall.SIGTERM)
	echotest.WaitGone(t, pid)
	if _, err := os.Stat(filepath.Join(dir, "echod.pid")); !os.IsNotExist(err) {
		t.Errorf("PID file left after SIGTERM: %v", err)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "echod.log")); !bytes.Contains(log, []byte("msg=stop")) {
		t.Errorf("no stop line in the log:\n%s", log)
	}
}

// TestDaemonDefaultDir starts the daemon without -dir: step ③ still runs, to
// "/", where the post's Run() calls Daemon() with its default "" and so keeps
// the shell's directory, which then cannot be unmounted.
func TestDaemonDefaultDir(t *testing.T) {
	pid, _ := launchDaemon(t, t.TempDir())
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != "/" {
		t.Errorf("cwd %q (%v), want /", cwd, err)
	}
}

func TestDaemonLeavesTerminal(t *testing.T) { echotest.DaemonLeavesTerminal(t, echodBin) }

func TestDaemonLeaksNoDescriptor(t *testing.T) {
	echotest.DaemonLeaksNoDescriptor(t, func(dir string, extra []*os.File) (string, string, int) {
		return runEchod(t, dir, extra)
	})
}

// TestDaemonStdoutClosed starts echod as `echod | true` would: the start
// works, so the exit status is 0, though nobody reads what it prints.
func TestDaemonStdoutClosed(t *testing.T) {
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cmd := exec.Command(echodBin, "-addr", "127.0.0.1:0")
	cmd.Dir, cmd.Stdout = dir, w
	echotest.CleanupDaemons(t, dir)
	err = cmd.Run()
	w.Close()
	if err != nil {
		t.Fatalf("echod | true: %v", err)
	}
	if pid := echotest.ReadPID(t, filepath.Join(dir, "echod.pid")); !echotest.Alive(pid) {
		t.Errorf("daemon %d not running", pid)
	}
}

// TestDaemonStartFails covers failures in the parent and in the daemon:
// exit 1, one line on stderr that names the problem, nothing left running,
// and no file left that was not there before.
func TestDaemonStartFails(t *testing.T) {
	taken := echotest.Dial(t, startServer(t).Addr).RemoteAddr().String()
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)
	fifo := filepath.Join(t.TempDir(), "fifo") // not /dev/full: a daemon that took it would remove it
	syscall.Mkfifo(fifo, 0o644)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(filepath.Join(filepath.Dir(link), "target"), link)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"port taken", []string{"-addr", taken}, "address already in use"},
		{"bad log", []string{"-log", "/nonexistent/echod.log"}, "open /nonexistent/echod.log: no such file or directory"},
		{"no dir", []string{"-dir", "/nonexistent"}, "chdir /nonexistent: no such file or directory"},
		{"dir is a file", []string{"-dir", notDir}, "chdir " + notDir + ": not a directory"},
		{"PID file a FIFO", []string{"-pidfile", fifo}, "-pidfile " + fifo + ": not a regular file; want a file's path"},
		{"PID file a device", []string{"-pidfile", "/dev/null"}, "-pidfile /dev/null: not a regular file; want a file's path"},
		{"PID file a link", []string{"-pidfile", link}, "-pidfile " + link + ": a symbolic link, which echod does not follow"},
		{"PID file is the log", []string{"-pidfile", "echod.log", "-log", "./echod.log"}, "-pidfile and -log are the same file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, errOut, code := runEchod(t, dir, nil, tc.args...)
			if code != 1 || !strings.HasPrefix(errOut, "echod: ") || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 1 and one line with %q", code, errOut, tc.want)
			}
			echotest.AssertEmpty(t, dir)
		})
	}
}

// TestDaemonDirUnsearchable runs echod as nobody with a -dir that nobody may
// enter: the daemon does the chdir, so the message names the directory.
func TestDaemonDirUnsearchable(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to run echod as nobody")
	}
	echotest.NeedTool(t, "setpriv", "util-linux")
	dir, closed := t.TempDir(), t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir, filepath.Dir(echodBin)} {
		os.Chmod(d, 0o777)
	}
	os.Chmod(closed, 0)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", echodBin, "-addr", "127.0.0.1:0", "-dir", closed)
	cmd.Dir = dir
	echotest.CleanupDaemons(t, dir)
	_, errOut, code := echotest.RunCmd(t, cmd)
	if want := "echod: chdir " + closed + ": permission denied\n"; code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	echotest.AssertEmpty(t, dir)
}

// TestDaemonWithoutProc hides /proc in a mount namespace of its own: daemon
// mode needs none (close_range, not a walk of /proc/self/fd), and starts.
func TestDaemonWithoutProc(t *testing.T) {
	echotest.NeedTool(t, "unshare", "util-linux")
	dir := t.TempDir()
	cmd := exec.Command("unshare", "-m", "sh", "-c", `mount -t tmpfs none /proc && exec "$0" -addr 127.0.0.1:0`, plainBin) // the race detector wants /proc
	cmd.Dir = dir
	echotest.CleanupDaemons(t, dir)
	out, errOut, code := echotest.RunCmd(t, cmd)
	if strings.HasPrefix(errOut, "unshare:") || strings.HasPrefix(errOut, "mount:") {
		t.Skipf("no mount namespace here: %s", errOut)
	}
	var pid int
	if _, err := fmt.Sscanf(out, "echod: daemon pid %d listening on", &pid); code != 0 || err != nil {
		t.Errorf("exit %d, stdout %q, stderr %q; want a daemon", code, out, errOut)
	}
}

// TestDaemonFoundByDotInPath runs echod as the shell finds it through PATH=.: (Go's exec refuses such a lookup,
// ErrDot): it starts, by its absolute path, and so does its successor at a reload.
func TestDaemonFoundByDotInPath(t *testing.T) {
	dir := t.TempDir()
	installEchod(t, dir, echodBin, 0o755)
	cmd := exec.Command("sh", "-c", `PATH=.:$PATH exec echod -addr 127.0.0.1:0`)
	cmd.Dir = dir
	echotest.CleanupDaemons(t, dir)
	out, errOut, code := echotest.RunCmd(t, cmd)
	if code != 0 || !strings.HasPrefix(out, "echod: daemon pid ") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want a daemon", code, out, errOut)
	}
	pid := echotest.ReadPID(t, filepath.Join(dir, "echod.pid"))
	syscall.Kill(pid, syscall.SIGHUP)
	echotest.WaitGone(t, pid) // it handed over
	if next := echotest.ReadPID(t, filepath.Join(dir, "echod.pid")); !echotest.Alive(next) {
		log, _ := os.ReadFile(filepath.Join(dir, "echod.log"))
		t.Errorf("no daemon after the reload: %s", log)
	}
}

// TestDaemonDirGone starts echod with -dir . in a directory that was removed: one line that says so, exit 1, and
// no file left; not "chdir : no such file or directory", a path lost on the way.
func TestDaemonDirGone(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `mkdir gone && cd gone && rmdir ../gone && exec "$0" -addr 127.0.0.1:0 -dir . -log "$1/echod.log" -pidfile "$1/echod.pid"`, echodBin, dir)
	cmd.Dir = dir
	echotest.CleanupDaemons(t, dir)
	_, errOut, code := echotest.RunCmd(t, cmd)
	if want := "echod: the directory echod runs in is gone (getwd: no such file or directory)"; code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	echotest.AssertEmpty(t, dir)
}

// TestPIDFileDiskFull gives echod an empty PID file on a file system that is full (a tmpfs in a mount namespace of
// our own): the write fails, echod exits 1, and the file stays empty, not filled with NULs by a Truncate.
func TestPIDFileDiskFull(t *testing.T) {
	echotest.NeedTool(t, "unshare", "util-linux")
	if os.Getuid() != 0 {
		t.Skip("needs root, to mount a tmpfs in a mount namespace")
	}
	dir := t.TempDir()
	script := `mount -t tmpfs -o size=4k tmpfs "$1" || exit 99; : > "$1/echod.pid"; head -c 1M /dev/zero > "$1/fill" 2>/dev/null
err=$("$0" -foreground -addr 127.0.0.1:0 -pidfile "$1/echod.pid" 2>&1); echo "exit $?: $err"; od -An -c "$1/echod.pid"`
	out, _ := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, echodBin, dir).CombinedOutput()
	if strings.HasPrefix(string(out), "unshare:") || strings.Contains(string(out), "mount:") {
		t.Skipf("no mount namespace here: %s", out)
	}
	if want := "exit 1: echod: write " + dir + "/echod.pid: no space left on device\n"; string(out) != want { // od: no byte
		t.Errorf("got %q; want %q", out, want)
	}
}

func TestDaemonPIDFileLocked(t *testing.T) {
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir)
	_, errOut, code := runEchod(t, dir, nil, "-addr", addr) // as `make run` twice would
	if want := fmt.Sprintf("echod: already running as pid %d", pid); code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if got := echotest.ReadPID(t, filepath.Join(dir, "echod.pid")); got != pid {
		t.Errorf("the refused start changed the PID file to %d", got)
	}
}

// TestDaemonPIDFileLockedEmpty finds the PID file locked but still empty,
// as it is while a daemon starts: the message names no pid.
func TestDaemonPIDFileLockedEmpty(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "echod.pid"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	_, errOut, code := runEchod(t, dir, nil)
	if want := "echod: already running (echod.pid is locked)\n"; code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
}

// TestDaemonStalePIDFile kills a daemon so that its PID file stays behind,
// unlocked, and makes the stale pid longer than any new one: the next start
// takes the file over and leaves its own pid alone in it, or a script's kill
// $(cat echod.pid) would read a second line, 0, the caller's process group.
func TestDaemonStalePIDFile(t *testing.T) {
	dir := t.TempDir()
	old, _ := launchDaemon(t, dir)
	syscall.Kill(old, syscall.SIGKILL)
	echotest.WaitGone(t, old)
	pidfile := filepath.Join(dir, "echod.pid")
	if got := echotest.ReadPID(t, pidfile); got != old {
		t.Fatalf("PID file holds %d, want the dead daemon's %d", got, old)
	}
	os.WriteFile(pidfile, []byte("4194000\n"), 0o644)
	pid, _ := launchDaemon(t, dir)
	if got, _ := os.ReadFile(pidfile); string(got) != fmt.Sprintln(pid) {
		t.Errorf("PID file holds %q, want %q", got, fmt.Sprintln(pid))
	}
}

// TestDaemonPIDFileSymlink plants a symbolic link where the PID file goes:
// echod refuses it, and the file it points at is left as it was.
func TestDaemonPIDFileSymlink(t *testing.T) {
	dir, victim := t.TempDir(), filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o644)
	os.Symlink(victim, filepath.Join(dir, "echod.pid"))
	_, errOut, code := runEchod(t, dir, nil)
	if want := "echod: -pidfile echod.pid: a symbolic link, which echod does not follow: name the file itself\n"; code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the link's target now holds %q", b)
	}
	if files, _ := os.ReadDir(dir); len(files) != 1 {
		t.Errorf("left in %s: %v", dir, files)
	}
}

// TestDaemonPIDFileUnwritable limits the size of files that echod may write
// to 2 bytes: the pid does not fit, the start fails with why, and the files
// it created are gone.
func TestDaemonPIDFileUnwritable(t *testing.T) {
	echotest.NeedTool(t, "prlimit", "util-linux")
	dir := t.TempDir()
	cmd := exec.Command("prlimit", "--fsize=2", echodBin, "-addr", "127.0.0.1:0")
	cmd.Dir = dir
	echotest.CleanupDaemons(t, dir)
	_, errOut, code := echotest.RunCmd(t, cmd)
	if want := "echod: write " + filepath.Join(dir, "echod.pid") + ": file too large\n"; code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	echotest.AssertEmpty(t, dir)
}

// TestDaemonStopSparesOthersPIDFile runs daemon A, removes its PID file,
// starts daemon B with the same PID file, and stops A: B's file stays.
func TestDaemonStopSparesOthersPIDFile(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "echod.pid")
	a, _ := launchDaemon(t, dir)
	os.Remove(pidfile)
	b, _ := launchDaemon(t, dir, "-log", "b.log")
	syscall.Kill(a, syscall.SIGTERM)
	echotest.WaitGone(t, a)
	if got := echotest.ReadPID(t, pidfile); got != b {
		t.Errorf("PID file holds %d, want B's %d", got, b)
	}
}

// TestDaemonStrayEnvironment sets the variable that marks the daemon, as a
// careless environment might: it makes nobody a daemon.
func TestDaemonStrayEnvironment(t *testing.T) {
	t.Setenv("_ECHOD_DAEMON", "1")
	echotest.MustEcho(t, echotest.Dial(t, startServer(t).Addr), []byte("-foreground serves"))
	_, addr := launchDaemon(t, t.TempDir())
	echotest.MustEcho(t, echotest.Dial(t, addr), []byte("so does a daemon"))
}

// slowStart writes an executable script that stands where echod is started
// from, so that the daemon echod starts is the script: in dir, it writes its
// pid to child.pid, then runs then. echod is started through it; the test
// kills what it leaves running.
func slowStart(t *testing.T, dir, then string) (exe, pidfile string) {
	installScript(t, dir, fmt.Sprintf("#!/bin/bash\nif [ -n \"$_ECHOD_DAEMON\" ]; then cd %s; echo $$ > child.pid; %s; fi\nexec -a \"$0\" %s \"$@\"\n", dir, then, echodBin))
	echotest.CleanupDaemons(t, dir)
	return filepath.Join(dir, "echod"), filepath.Join(dir, "child.pid")
}

// TestDaemonStartInterrupted presses Ctrl-C (SIGINT), closes the terminal
// (SIGHUP) or sends SIGTERM while the parent waits for a daemon that hangs:
// the parent kills it, and nothing is left.
func TestDaemonStartInterrupted(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			exe, childPID := slowStart(t, dir, "exec sleep 60")
			cmd := exec.Command(exe, "-addr", "127.0.0.1:0", "-pidfile", "echod.pid", "-log", "echod.log")
			cmd.Dir = dir
			var errOut bytes.Buffer
			cmd.Stderr = &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			echotest.Poll(t, 5*time.Second, "the daemon did not start", func() bool { b, _ := os.ReadFile(childPID); return len(b) > 0 })
			child := echotest.ReadPID(t, childPID)
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if code := echotest.ExitCode(err); code != 1 || !strings.Contains(errOut.String(), "stopped: "+sig.String()) {
					t.Errorf("exit %d (%v), stderr %q; want 1 and the signal named", code, err, errOut.String())
				}
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				t.Fatal("the parent did not stop")
			}
			echotest.WaitGone(t, child)
			os.Remove(childPID)
			for _, f := range []string{"echod.pid", "echod.log"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s left behind", f)
				}
			}
		})
	}
}

// TestDaemonHangsInStartUp starts a daemon that never reports: the parent
// gives up after its bound, 10s, kills it and says so.
func TestDaemonHangsInStartUp(t *testing.T) {
	t.Parallel() // it waits the 10s
	dir := t.TempDir()
	exe, childPID := slowStart(t, dir, "exec sleep 60")
	cmd := exec.Command(exe, "-addr", "127.0.0.1:0")
	cmd.Dir = dir
	begin := time.Now()
	_, errOut, code := echotest.RunCmd(t, cmd)
	if d := time.Since(begin); code != 1 || !strings.Contains(errOut, "no word from it in 10s") || d < 10*time.Second {
		t.Errorf("exit %d after %v, stderr %q; want 1 after 10s, no word", code, d, errOut)
	}
	echotest.WaitGone(t, echotest.ReadPID(t, childPID))
}

// TestDaemonParentKilled kills the parent while its daemon starts slowly:
// the daemon cannot report that it serves, so it exits, and removes the PID
// file it wrote.
func TestDaemonParentKilled(t *testing.T) {
	dir := t.TempDir()
	exe, childPID := slowStart(t, dir, "until [ -e go ]; do sleep 0.01; done")
	cmd := exec.Command(exe, "-addr", "127.0.0.1:0")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	echotest.Poll(t, 5*time.Second, "the daemon did not start", func() bool { b, _ := os.ReadFile(childPID); return len(b) > 0 })
	cmd.Process.Kill()
	cmd.Wait()
	os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
	child := echotest.ReadPID(t, childPID)
	echotest.WaitGone(t, child)
	if log, _ := os.ReadFile(filepath.Join(dir, "echod.log")); !bytes.Contains(log, []byte("telling our parent that we serve")) {
		t.Errorf("the log does not say why the daemon exited:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(dir, "echod.pid")); err == nil {
		t.Error("PID file left behind")
	}
}

// TestForegroundWritesNothing runs -foreground as a supervisor would, with
// no -pidfile or -log: it writes no file where it runs.
func TestForegroundWritesNothing(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(echodBin, "-foreground", "-addr", "127.0.0.1:0")
	cmd.Dir = dir
	s := echotest.Start(t, cmd)
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("logs on stderr"))
	if files, _ := os.ReadDir(dir); len(files) > 0 {
		t.Errorf("-foreground wrote %v", files)
	}
	s.Stop(t, 5*time.Second)
}

func TestForegroundPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fg.pid")
	s := startServer(t, "-pidfile", path)
	if got := echotest.ReadPID(t, path); got != s.Cmd.Process.Pid {
		t.Errorf("PID file holds %d, want %d", got, s.Cmd.Process.Pid)
	}
	s.Stop(t, 5*time.Second)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("PID file left after SIGTERM: %v", err)
	}
}

func TestLockPIDFollowsRemoval(t *testing.T) { echotest.LockFollowsRemoval(t, lockPID) }

// makeIn runs production's make with args, targets and variables, in dir,
// where echod.pid is unless PIDFILE says otherwise. The daemons under test
// run a binary the test built, so make builds none (GO=true).
func makeIn(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	wd, _ := os.Getwd()
	return echotest.Make(t, filepath.Join(wd, "Makefile"), dir, append(args, "GO=true")...)
}

func TestMakeAddr(t *testing.T) {
	t.Parallel()
	wd, _ := os.Getwd()
	echotest.MakeAddr(t, filepath.Join(wd, "Makefile"), echodBin)
}

func TestMakeWithoutPS(t *testing.T) {
	t.Parallel()
	wd, _ := os.Getwd()
	echotest.MakeWithoutPS(t, filepath.Join(wd, "Makefile"), echodBin, "stop", "reload", "ps")
}

// TestMakeReloadBuilds checks that make reload builds echod before it
// signals the daemon, so that a reload after an edit runs the edit.
func TestMakeReloadBuilds(t *testing.T) {
	echotest.NeedTool(t, "make", "make")
	wd, _ := os.Getwd()
	cmd := exec.Command("make", "-n", "-W", filepath.Join(wd, "main.go"), "-f", filepath.Join(wd, "Makefile"), "reload")
	cmd.Dir = t.TempDir()
	out, errOut, code := echotest.RunCmd(t, cmd)
	build, signal := strings.Index(out, " build -o bin/echod ."), strings.Index(out, "kill -HUP")
	if code != 0 || build < 0 || signal < build {
		t.Errorf("make -n reload: exit %d, stderr %q; want go build, then kill -HUP:\n%s", code, errOut, out)
	}
}

// TestMakeRefusesStalePIDFile puts a stranger's pid in echod.pid, as a
// crashed daemon's file holds once its pid is reused: make stop, reload and
// ps leave the stranger alone.
func TestMakeRefusesStalePIDFile(t *testing.T) {
	dir := t.TempDir()
	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stranger.Process.Kill(); stranger.Wait() }()
	os.WriteFile(filepath.Join(dir, "echod.pid"), []byte(fmt.Sprintln(stranger.Process.Pid)), 0o644)
	for _, target := range []string{"stop", "reload", "ps"} {
		_, errOut, code := makeIn(t, dir, target)
		if code == 0 || !strings.Contains(errOut, "echod: not running (stale echod.pid)") {
			t.Errorf("make %s: exit %d, stderr %q", target, code, errOut)
		}
	}
	if !echotest.Alive(stranger.Process.Pid) {
		t.Error("make killed a stranger")
	}
}

// TestMakeStop stops a real daemon with make stop, which returns once it is
// gone. The daemon's PID file is not echod.pid, nor in the directory make
// runs in: PIDFILE names it.
func TestMakeStop(t *testing.T) {
	dir, pidfile := t.TempDir(), filepath.Join(t.TempDir(), "other.pid")
	pid, _ := launchDaemon(t, dir, "-pidfile", pidfile)
	if out, errOut, code := makeIn(t, dir, "ps", "PIDFILE="+pidfile); code != 0 || !strings.Contains(out, strconv.Itoa(pid)) {
		t.Errorf("make ps: exit %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := makeIn(t, dir, "stop", "PIDFILE="+pidfile); code != 0 {
		t.Fatalf("make stop: exit %d, %q", code, errOut)
	}
	if echotest.Alive(pid) {
		t.Error("make stop returned before the daemon was gone")
	}
}

// TestDaemonDiesInStartUp starts a build whose daemon exits 3 at once, with
// a trace on stderr or without a word: the start fails, and the log it
// created stays only if the daemon wrote in it.
func TestDaemonDiesInStartUp(t *testing.T) {
	for _, tc := range []struct{ name, then, log string }{
		{"with a trace", "echo 'panic: at start-up' >&2; exit 3", "panic: at start-up\n"},
		{"without a word", "exit 3", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			exe, _ := slowStart(t, dir, tc.then)
			cmd := exec.Command(exe, "-addr", "127.0.0.1:0", "-pidfile", "")
			cmd.Dir = dir
			_, errOut, code := echotest.RunCmd(t, cmd)
			if code != 1 || !strings.Contains(errOut, "ended in start-up without a word, exit status 3") {
				t.Errorf("exit %d, stderr %q", code, errOut)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "echod.log")); tc.log == "" && err == nil || tc.log != "" && string(b) != tc.log {
				t.Errorf("the log holds %q, %v; want %q", b, err, tc.log)
			}
		})
	}
}

// TestDaemonStartFailsLeavesLog starts echod with a -dir that does not exist
// and a log that does: the reason goes to the terminal, once, and the log is
// as it was, with no plain line in it that is not in its key=value form.
func TestDaemonStartFailsLeavesLog(t *testing.T) {
	dir := t.TempDir()
	old := "time=2026-11-28T00:00:00.000Z level=INFO msg=stop\n"
	os.WriteFile(filepath.Join(dir, "echod.log"), []byte(old), 0o644)
	_, errOut, code := runEchod(t, dir, nil, "-dir", "/nonexistent")
	if want := "echod: chdir /nonexistent: no such file or directory\n"; code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "echod.log")); string(b) != old {
		t.Errorf("the log is now %q, want it as it was", b)
	}
}
