package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	listenerFD, readyFD, pidFD = 3, 4, 5 // in the daemon: ExtraFiles[i] is fd 3+i
	// daemonEnv holds the inode of the pipe at readyFD: the handshake that
	// makes a process the daemon, which a stray variable cannot fake.
	daemonEnv = "_ECHOD_DAEMON"
)

func isDaemon() bool {
	var st syscall.Stat_t
	return syscall.Fstat(readyFD, &st) == nil && os.Getenv(daemonEnv) == strconv.FormatUint(st.Ino, 10)
}

// startDaemon is the post's Daemon() for Go, which cannot fork: fork() copies
// only the calling thread, and the Go runtime always has several. It
// re-executes exe in dir with the listener, the locked PID file and a pipe for
// the new daemon's word, and returns its pid once it serves, for the first
// start and every reload. It kills one that fails, or is silent for 10s.
func startDaemon(ctx context.Context, exe string, args []string, dir string, ln net.Listener, pidf *os.File, logPath string) (int, error) {
	// Close-on-exec for every descriptor we inherited (a shell's fd 251,
	// say), or the daemon would hold it open for good; ExtraFiles still pass.
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, errors.New("daemon mode needs /proc (-foreground works without)")
	}
	for _, e := range fds {
		if fd, _ := strconv.Atoi(e.Name()); fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
	_, statErr := os.Stat(logPath)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644) // by path: after logrotate renamed it, a new file
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	fail := func(err error) (int, error) {
		if os.IsNotExist(statErr) {
			os.Remove(logPath) // the error is on the terminal, or in the reloading daemon's log
		}
		return 0, err
	}
	lnf, err := listenerFile(ln)
	if err != nil {
		return fail(err)
	}
	defer lnf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer r.Close()
	var pipe syscall.Stat_t
	syscall.Fstat(int(w.Fd()), &pipe)
	cmd := exec.Command(exe)
	cmd.Args, cmd.Dir = args, dir // a daemon starts where the first echod did, for its relative paths
	cmd.Env = append(os.Environ(), daemonEnv+"="+strconv.FormatUint(pipe.Ino, 10))
	cmd.ExtraFiles = []*os.File{lnf, w, pidf}
	// ①忽略信号 and ③更改工作目录 are the daemon's own (see daemon).

	// ②自成会话: setsid() in the child before exec; a new process is no
	// group leader, so it succeeds. The daemon is then a session leader, which
	// could gain a controlling terminal by opening one; echod never opens a
	// terminal, so it needs no second fork (daemon(7)).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ④重定向标准输入输出: nil Stdin and Stdout are /dev/null. Stderr goes to
	// the log rather than /dev/null, so a panic's trace is kept.
	cmd.Stderr = logf

	err = cmd.Start()
	w.Close() // ours; the read below ends at EOF once the daemon is gone
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, 10*time.Second, errors.New("no word from it in 10s"))
	defer cancel()
	context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })
	msg, _ := io.ReadAll(r)
	if string(msg) == readyMsg {
		return cmd.Process.Pid, nil
	}
	cmd.Process.Kill() // nothing may be left running after a failed start
	cmd.Wait()
	if len(msg) > 0 {
		return fail(errors.New(strings.TrimSpace(string(msg)))) // the daemon's own words
	} else if ctx.Err() != nil {
		return fail(fmt.Errorf("start-up of pid %d stopped: %w", cmd.Process.Pid, context.Cause(ctx)))
	}
	return 0, fmt.Errorf("pid %d ended in start-up, %v; see %s", cmd.Process.Pid, cmd.ProcessState, logPath)
}

// listenerFile dups ln for a new daemon. Not ln.File(): exec calls its Fd, which makes
// the shared socket blocking, and our Accept could sleep through our Close (golang/go#29277).
func listenerFile(ln net.Listener) (*os.File, error) {
	sc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd uintptr
	var errno syscall.Errno
	err = sc.Control(func(s uintptr) { fd, _, errno = syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0) })
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(fd, "listener"), nil
}

// daemon is the re-executed echod: it takes back what startDaemon passed,
// finishes the four steps, and serves until SIGTERM or a reload's handover.
func daemon(pidPath, dir, logPath string) error {
	os.Unsetenv(daemonEnv)             // for us alone
	start, _ := os.Getwd()             // where the first echod was started
	logPath, _ = filepath.Abs(logPath) // for a reload's startDaemon, which runs in -dir

	// ①忽略信号: SIGPIPE (see main) kills us when fd 1 or 2 is a closed pipe,
	// and the job-control signals stop us. SIGSTOP, which the post ignores,
	// cannot be ignored. SIGCHLD stays: ignored, a reload's Wait gets ECHILD.
	// SIGHUP, which a closing terminal sends, means reload: a daemon has no
	// terminal (daemon(7)), and it is caught before our pid is published.
	signal.Ignore(syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	hup := make(chan os.Signal, 1) // holds one: SIGHUPs during a reload coalesce
	signal.Notify(hup, syscall.SIGHUP)

	ready := os.NewFile(readyFD, "ready")
	var pidf *os.File
	if pidPath != "" {
		pidPath, _ = filepath.Abs(pidPath)
		pidf = os.NewFile(pidFD, pidPath)
	}
	// ③更改工作目录
	err := os.Chdir(dir)
	var ln net.Listener
	if err == nil {
		ln, err = listenerAt(listenerFD)
	}
	if err == nil {
		err = run(ln, pidf, ready, hup, func(ctx context.Context) int {
			return reload(ctx, ln, pidf, start, logPath)
		})
	}
	if err != nil {
		fmt.Fprintln(ready, err) // for our parent to print, if it still waits
	}
	return err
}

// reload is 热重启: it starts a new daemon from the binary now at our start
// path, as the first start did, and returns its pid; 0 if it fails, and we serve on.
func reload(ctx context.Context, ln net.Listener, pidf *os.File, start, logPath string) int {
	var now syscall.Timespec // CLOCK_MONOTONIC (1), which RELOADING=1 carries
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&now)), 0)
	sdNotify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", now.Nano()/1e3))
	exe := os.Args[0] // absolute (see launch)
	if _, err := os.Stat(exe); err != nil {
		slog.Warn("reload: running this binary again", "err", err) // e.g., go run removed it
		exe = "/proc/self/exe"
	}
	pid, err := startDaemon(ctx, exe, os.Args, start, ln, pidf, logPath)
	if err != nil {
		slog.Error("reload failed; serving on", "err", err)
		sdNotify(fmt.Sprintf(readyState, os.Getpid()))
	}
	return pid
}
