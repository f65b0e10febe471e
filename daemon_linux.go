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
	listenerFD, readyFD, pidFD, movesFD = 3, 4, 5, 6 // in the daemon: ExtraFiles[i] is fd 3+i
	// daemonEnv holds the inode of the pipe at readyFD: the handshake that
	// makes a process the daemon, which a stray variable cannot fake.
	daemonEnv = "_ECHOD_DAEMON"
)

func isDaemon() bool {
	var st syscall.Stat_t
	return syscall.Fstat(readyFD, &st) == nil && os.Getenv(daemonEnv) == strconv.FormatUint(st.Ino, 10)
}

// startDaemon is the post's Daemon() for Go, which cannot fork: fork() copies
// only the calling thread, and the Go runtime always has several. For the
// first start and every reload alike, it re-executes exe in dir with the
// listener, the locked PID file, a pipe for the new daemon's word, and a
// socket pair to move connections over. Once the daemon serves, it returns
// its pid and our end of the pair. It kills one that fails, is silent for
// 10s, or is still starting when ctx is done.
func startDaemon(ctx context.Context, exe string, args []string, dir string, ln net.Listener, pidf *os.File, logPath string) (pid int, to *net.UnixConn, err error) {
	_, statErr := os.Stat(logPath)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o644) // by path: after logrotate renamed it, a new file
	if err != nil {
		return 0, nil, err
	}
	defer logf.Close()
	var moves net.Conn // our end of the socket pair
	keepLog := false   // the daemon ended without a word: its log may say why
	defer func() {
		if err != nil && moves != nil {
			moves.Close()
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
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0) // one descriptor a message
	if err != nil {
		return 0, nil, err
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "moves"), os.NewFile(uintptr(pair[1]), "moves")
	defer theirs.Close()
	moves, err = net.FileConn(ours) // a copy, non-blocking: it takes a deadline
	ours.Close()
	if err != nil {
		return 0, nil, err
	}
	// Close-on-exec for every descriptor we hold but these (a shell's fd 251,
	// say), or the daemon would hold it open for good; ExtraFiles still pass.
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, nil, errors.New("daemon mode needs /proc (-foreground works without)")
	}
	for _, e := range fds {
		if fd, _ := strconv.Atoi(e.Name()); fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	defer r.Close()
	var pipe syscall.Stat_t
	syscall.Fstat(int(w.Fd()), &pipe)
	cmd := exec.Command(exe)
	cmd.Args, cmd.Dir = args, dir // a daemon starts where the first echod did, for its relative paths
	cmd.Env = append(os.Environ(), daemonEnv+"="+strconv.FormatUint(pipe.Ino, 10))
	cmd.ExtraFiles = []*os.File{lnf, w, pidf, theirs}
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
		return 0, nil, err
	}
	pid = cmd.Process.Pid
	ctx, cancel := context.WithTimeoutCause(ctx, 10*time.Second, errors.New("no word from it in 10s"))
	defer cancel()
	context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })
	msg, _ := io.ReadAll(r)
	if string(msg) == readyMsg {
		return pid, moves.(*net.UnixConn), nil
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

	ready := os.NewFile(readyFD, "ready")
	var pidf *os.File
	if pidPath != "" {
		pidPath, _ = filepath.Abs(pidPath)
		pidf = os.NewFile(pidFD, pidPath)
	}
	moves := os.NewFile(movesFD, "moves")
	c, _ := net.FileConn(moves) // the old daemon's connections; an echod before 传递文件描述符 passes none
	from, _ := c.(*net.UnixConn)
	moves.Close()
	// ③更改工作目录
	err := os.Chdir(dir)
	var ln net.Listener
	if err == nil {
		ln, err = listenerAt(listenerFD)
	}
	if err == nil {
		err = run(ln, from, pidf, ready, hup, func(ctx context.Context) (int, *net.UnixConn) {
			return reload(ctx, ln, pidf, start, logPath)
		})
	}
	if err != nil {
		fmt.Fprintln(ready, err) // for our parent to print, if it still waits
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
