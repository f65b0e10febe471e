package echotest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ProcStat returns the fields of /proc/PID/stat after the command name:
// state, ppid, pgrp, session, tty_nr, ...
func ProcStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := bytes.LastIndexByte(b, ')'); err == nil && i > 0 {
		return strings.Fields(string(b[i+1:]))
	}
	return nil
}

// Alive reports whether pid still runs: a zombie (Z) has exited only once
// its threads have all gone (num_threads 1), since a killed process's first
// thread may be a zombie while the others still exit, holding its files and
// its PID file's lock.
func Alive(pid int) bool {
	st := ProcStat(pid)
	return st != nil && (st[0] != "Z" || st[17] != "1")
}

// WaitGone waits until pid has exited. Its parent may be gone, so it may
// stay a zombie if this machine's init does not reap.
func WaitGone(t testing.TB, pid int) {
	t.Helper()
	Poll(t, 10*time.Second, fmt.Sprintf("pid %d still running", pid), func() bool { return !Alive(pid) })
}

// Adopt makes this process adopt what its children leave running, so that
// the tests find a daemon among their own processes (see Running).
func Adopt() {
	if _, _, err := syscall.RawSyscall(syscall.SYS_PRCTL, 36, 1, 0); err != 0 { // 36: PR_SET_CHILD_SUBREAPER
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
}

// Running lists the live processes whose command line or open files name
// marker: a daemon holds its log and PID file open. It looks at the test's
// own processes only, never at the machine's: this process is a subreaper
// (see Adopt), so a daemon whose parent has exited is the test's child, not
// init's.
func Running(marker string) []int {
	var found []int
	for _, pid := range Descendants(os.Getpid()) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		for _, file := range openFiles(pid) {
			b = append(append(b, 0), file...)
		}
		if bytes.Contains(b, []byte(marker)) && Alive(pid) {
			found = append(found, pid)
		}
	}
	return found
}

// openFiles lists what pid's descriptors link to: its files' paths, socket:[inode] and the like.
func openFiles(pid int) []string {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	var files []string
	for _, fd := range fds {
		link, _ := os.Readlink(fd)
		files = append(files, link)
	}
	return files
}

// Descendants lists pid's children, their children, and so on. A walk
// misses a process that an exiting parent hands up to an ancestor already
// read, so it walks until two walks agree (at most 10 times), and returns all
// that any walk saw.
func Descendants(pid int) []int {
	var seen, last []int
	for range 10 {
		var walk []int
		for next := []int{pid}; len(next) > 0; next = next[1:] {
			tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", next[0])) // each thread's own
			for _, f := range tasks {
				b, _ := os.ReadFile(f)
				for _, field := range strings.Fields(string(b)) {
					child, _ := strconv.Atoi(field)
					walk, next = append(walk, child), append(next, child)
				}
			}
		}
		slices.Sort(walk)
		seen = append(seen, walk...)
		if slices.Equal(walk, last) {
			break
		}
		last = walk
	}
	slices.Sort(seen)
	return slices.Compact(seen)
}

// CanList reports whether this kernel lists a process's children in /proc.
var CanList = sync.OnceValue(func() bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d/children", os.Getpid(), os.Getpid()))
	return err == nil
})

// CleanupDaemons kills, when the test ends, every process that names dir
// (see Running): a daemon that the test started, and any that it started.
func CleanupDaemons(t testing.TB, dir string) {
	if !CanList() {
		t.Skip("needs /proc/PID/task/TID/children (a kernel with CONFIG_PROC_CHILDREN), to find the daemons it starts")
	}
	t.Cleanup(func() {
		for _, pid := range Running(dir) {
			syscall.Kill(pid, syscall.SIGKILL)
			WaitGone(t, pid)
		}
	})
}

// AssertEmpty checks that a failed start left dir as it found it, empty,
// and nothing running that names it.
func AssertEmpty(t testing.TB, dir string) {
	t.Helper()
	if left := Running(dir); len(left) > 0 {
		t.Errorf("left running: %v", left)
	}
	if files, _ := os.ReadDir(dir); len(files) > 0 {
		t.Errorf("left in %s: %v", dir, files)
	}
}

// ReadPID reads the pid in a PID file, failing the test if there is none.
func ReadPID(t testing.TB, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == 0 {
		t.Fatalf("PID file %s: %q, %v", path, b, err)
	}
	return pid
}

// SigMask reads a signal mask (SigIgn, SigCgt) from /proc/PID/status.
func SigMask(t testing.TB, pid int, name string) uint64 {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	i := bytes.Index(status, []byte(name+":\t"))
	if i < 0 {
		t.Fatalf("no %s for pid %d", name, pid)
	}
	mask, _ := strconv.ParseUint(string(status[i+len(name)+2:i+len(name)+18]), 16, 64)
	return mask
}

// StartDaemon starts the daemon from exe, run in dir, and returns the pid
// and address that the parent printed. A start takes well under a second
// here, and 3s were seen under -race beside five parallel tests; a parent
// that waited for its bound (10s) instead of the daemon's word fails.
func StartDaemon(t testing.TB, dir, exe string, args ...string) (pid int, addr string) {
	t.Helper()
	CleanupDaemons(t, dir)
	t.Cleanup(func() { // a failure in CI is read from its output alone: show what the daemons logged
		path := filepath.Join(dir, "echod.log")
		if fi, err := os.Stat(path); t.Failed() && err == nil && fi.Mode().IsRegular() { // a FIFO's open waits
			log, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSuffix(string(log), "\n"), "\n")
			t.Logf("the last lines of %s/echod.log:\n%s", dir, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	cmd := exec.Command(exe, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Dir = dir
	begin := time.Now()
	out, errOut, code := RunCmd(t, cmd)
	if _, err := fmt.Sscanf(out, "echod: daemon pid %d listening on %s (log ", &pid, &addr); err != nil || code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	if d := time.Since(begin); d > 6*time.Second {
		t.Errorf("the start took %v", d)
	}
	return pid, addr
}

// Make runs make with makefile, targets and variables, in dir. The targets
// that signal a daemon use ps.
func Make(t testing.TB, makefile, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := makeCmd(t, makefile, dir, args...)
	NeedTool(t, "ps", "procps")
	return RunCmd(t, cmd)
}

// makeCmd is make, quiet, with makefile, targets and variables, to run in dir.
func makeCmd(t testing.TB, makefile, dir string, args ...string) *exec.Cmd {
	t.Helper()
	NeedTool(t, "make", "make")
	cmd := exec.Command("make", append([]string{"-s", "-f", makefile}, args...)...)
	cmd.Dir = dir
	return cmd
}

// DaemonLeavesTerminal starts the daemon at bin from a terminal, as a user would,
// with script(1). While the shell that started it still holds the terminal,
// the daemon has no controlling terminal (field 7 of /proc/PID/stat, tty_nr).
func DaemonLeavesTerminal(t *testing.T, bin string) {
	NeedTool(t, "script", "bsdutils")
	dir := t.TempDir()
	CleanupDaemons(t, dir)
	sh := "tty && " + bin + ` -addr 127.0.0.1:0 && cut -d" " -f7 /proc/$(cat echod.pid)/stat`
	cmd := exec.Command("script", "-qec", sh, "/dev/null")
	cmd.Dir = dir
	out, errOut, code := RunCmd(t, cmd)
	var tty, ttyNr string
	var pid int
	format := "%s\r\nechod: daemon pid %d listening on %s (log %s\r\n%s"
	if _, err := fmt.Sscanf(out, format, &tty, &pid, new(string), new(string), &ttyNr); err != nil || code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	if !strings.HasPrefix(tty, "/dev/pts/") {
		t.Fatalf("the parent had no terminal: tty said %q", tty)
	}
	if ttyNr != "0" {
		t.Errorf("the daemon has a controlling terminal: tty_nr %s", ttyNr)
	}
}

// DaemonLeaksNoDescriptor starts the daemon with run, with an inherited pipe that is
// not close-on-exec, as shells leave them: the daemon must not keep it open.
func DaemonLeaksNoDescriptor(t *testing.T, run func(dir string, extra []*os.File) (stdout, stderr string, code int)) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	extra := []*os.File{nil, nil, nil, nil, nil, nil, w} // fd 9, above what echod passes on
	out, errOut, code := run(t.TempDir(), extra)
	w.Close()
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(r); err != nil {
		t.Fatalf("the daemon holds our pipe open: %v", err)
	}
}
