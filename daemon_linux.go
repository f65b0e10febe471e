package main

import (
	"context"
	"errors"
	"fmt"
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
	listenerFD, pairFD, pidFD = 3, 4, 5 // in the daemon: ExtraFiles[i] is fd 3+i
	// daemonEnv holds the inode of the socket at pairFD: the handshake that
	// makes a process the daemon, which a stray variable cannot fake.
	daemonEnv = "_ECHOD_DAEMON"
)

func isDaemon() bool {
	var st syscall.Stat_t
	return syscall.Fstat(pairFD, &st) == nil && os.Getenv(daemonEnv) == strconv.FormatUint(st.Ino, 10)
}

// startDaemon is the post's Daemon() for Go, which cannot fork: fork() copies
// only the calling thread, and the Go runtime always has several. For the
// first start and every reload alike, it re-executes exe in dir with the
// listener, the locked PID file and one end of a socket pair. On the pair the
// new daemon says `ready`, or why it failed, and then takes the connections
// we move to it. Once the daemon serves, startDaemon returns its pid and our
// end of the pair. It kills one that fails, is silent for 10s, or is still
// starting when ctx is done.
func startDaemon(ctx context.Context, exe string, args []string, dir string, ln net.Listener, pidf *os.File, logPath string) (pid int, to *net.UnixConn, err error) {
	_, statErr := os.Stat(logPath)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o644) // by path: after logrotate renamed it, a new file
	if err != nil {
		return 0, nil, err
	}
	defer logf.Close()
	var pair net.Conn // our end
	keepLog := false  // the daemon ended without a word: its log may say why
	defer func() {
		if err != nil && pair != nil {
			pair.Close()
		}
		if err != nil && !keepLog && os.IsNotExist(statErr) {
			os.Remove(logPath) // the error is on the terminal, or in the reloading daemon's log
		}
	}()
	lfi, _ := logf.Stat()
	if pfi, _ := pidf.Stat(); os.SameFile(lfi, pfi) { // by any path; false if pidf is nil
		return 0, nil, errors.New("-pidfile and -log are the same file")
	}
	var lnfd int
	if err = control(ln, func(fd int) (err error) { lnfd, err = syscall.Dup(fd); return err }); err != nil {
		return 0, nil, err
	}
	lnf := os.NewFile(uintptr(lnfd), "listener") // not ln's File(): see control
	defer lnf.Close()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0) // one message, one descriptor
	if err != nil {
		return 0, nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "pair"), os.NewFile(uintptr(fds[1]), "pair")
	defer theirs.Close()
	pair, err = net.FileConn(ours) // a copy, non-blocking: it takes a deadline
	ours.Close()
	if err != nil {
		return 0, nil, err
	}
	// Close-on-exec for every descriptor we hold (a shell's fd 251, say), or
	// the daemon would hold it open for good; ExtraFiles still pass.
	if _, _, e := syscall.Syscall(436, 3, ^uintptr(0), 4); e != 0 { // close_range(3, ~0, CLOSE_RANGE_CLOEXEC)
		return 0, nil, fmt.Errorf("daemon mode needs Linux 5.11 or later (-foreground works without): close_range: %v", e)
	}
	var st syscall.Stat_t
	syscall.Fstat(fds[1], &st)
	cmd := exec.Command(exe)
	cmd.Args, cmd.Dir = args, dir // a daemon starts where the first echod did, for its relative paths
	cmd.Env = append(os.Environ(), daemonEnv+"="+strconv.FormatUint(st.Ino, 10))
	cmd.ExtraFiles = []*os.File{lnf, theirs, pidf}
	// ①忽略信号 and ③更改工作目录 are the daemon's own (see daemon).

	// ②自成会话: setsid() in the child before exec; a new process is no
	// group leader, so it succeeds. The daemon is then a session leader, which
	// could gain a controlling terminal by opening one; echod never opens a
	// terminal, so it needs no second fork (daemon(7)).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ④重定向标准输入输出: nil Stdin and Stdout are /dev/null. Stderr goes to
	// the log rather than /dev/null, so a panic's trace is kept.
	cmd.Stderr = logf

	if err = cmd.Start(); err != nil {
		return 0, nil, err
	}
	theirs.Close() // the daemon's now: our read below ends at EOF once it is gone
	pid = cmd.Process.Pid
	ctx, cancel := context.WithTimeoutCause(ctx, 10*time.Second, errors.New("no word from it in 10s"))
	defer cancel()
	context.AfterFunc(ctx, func() { pair.SetReadDeadline(time.Now()) }) // we read from it only here
	msg := make([]byte, 4096)
	n, _ := pair.Read(msg)
	if msg = msg[:n]; string(msg) == readyMsg {
		return pid, pair.(*net.UnixConn), nil
	}
	cmd.Process.Kill() // nothing may be left running after a failed start
	cmd.Wait()
	if len(msg) > 0 {
		return 0, nil, errors.New(strings.TrimSpace(string(msg))) // the daemon's own words
	} else if ctx.Err() != nil {
		return 0, nil, fmt.Errorf("start-up of pid %d stopped: %w", pid, context.Cause(ctx))
	}
	keepLog = true
	return 0, nil, fmt.Errorf("pid %d ended in start-up, %v; see %s", pid, cmd.ProcessState, logPath)
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

	var pidf *os.File
	if pidPath != "" {
		pidPath, _ = filepath.Abs(pidPath)
		pidf = os.NewFile(pidFD, pidPath)
	}
	f := os.NewFile(pairFD, "pair")
	c, err := net.FileConn(f) // to the echod that started us
	f.Close()
	if err != nil {
		return err
	}
	parent := c.(*net.UnixConn)
	// ③更改工作目录
	err = os.Chdir(dir)
	var ln net.Listener
	if err == nil {
		ln, err = listenerAt(listenerFD)
	}
	if err == nil {
		err = run(ln, parent, pidf, hup, func(ctx context.Context) (int, *net.UnixConn) {
			return reload(ctx, ln, pidf, start, logPath)
		})
	}
	if err != nil {
		fmt.Fprintln(parent, err) // for our parent to print, if it still waits
	}
	return err
}

// reload is 热重启: it starts a new daemon from the binary now at our start
// path, as the first start did, and returns its pid and our end of the
// socket pair to it; 0 if it fails, and we serve on.
func reload(ctx context.Context, ln net.Listener, pidf *os.File, start, logPath string) (int, *net.UnixConn) {
	// Our log, too, opened anew by path: after logrotate renamed it, what we
	// log from now on, a failure's reason too, goes to the file at -log.
	if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o644); err == nil {
		syscall.Dup3(int(f.Fd()), 2, 0)
		f.Close()
	}
	var now syscall.Timespec // CLOCK_MONOTONIC (1), which RELOADING=1 carries
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&now)), 0)
	sdNotify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", now.Nano()/1e3))
	exe := os.Args[0] // absolute (see launch)
	if _, err := os.Stat(exe); err != nil {
		slog.Warn("reload: running this binary again", "err", err) // e.g., go run removed it
		exe = "/proc/self/exe"
	}
	pid, to, err := startDaemon(ctx, exe, os.Args, start, ln, pidf, logPath)
	if err != nil {
		writePID(pidf, os.Getpid()) // the failed daemon may have written its own
	}
	if err != nil && ctx.Err() != nil {
		slog.Info("reload stopped", "err", err) // we stop too
	} else if err != nil {
		slog.Error("reload failed; serving on", "err", err)
		sdNotify(fmt.Sprintf(readyState, os.Getpid()))
	}
	return pid, to
}
