package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const (
	listenerFD, readyFD, pidFD = 3, 4, 5                // in the daemon: ExtraFiles[i] is fd 3+i
	daemonEnv                  = "_ECHOD_DAEMON_PARENT" // our pid, so a stray one cannot fool it
)

func isDaemon() bool { return os.Getenv(daemonEnv) == strconv.Itoa(os.Getppid()) }

// startDaemon is the post's Daemon(), up to exec. Go cannot fork(): it copies only the calling
// thread. So echod runs itself again, as the daemon, and waits for its word: an error reaches
// the terminal, and a failed start leaves nothing running.
func startDaemon(ln net.Listener, pidf, logf *os.File) (int, error) {
	// Only what we pass in ExtraFiles may reach the daemon, not what the shell left open.
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err // a check that cannot run refuses
	}
	for _, fd := range fds {
		if n, _ := strconv.Atoi(fd.Name()); n > 2 {
			syscall.CloseOnExec(n)
		}
	}
	exe, err := os.Executable() // where /proc/self/exe points: under go run, too
	if err != nil {
		return 0, err
	}
	lnf, err := ln.(*net.TCPListener).File() // bound by us: "address already in use" shows here
	if err != nil {
		return 0, err
	}
	defer lnf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(exe, append(os.Args[1:], "-pidfile="+*pidPath)...)
	cmd.Args[0] = os.Args[0] // for ps
	cmd.Env = append(os.Environ(), daemonEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.ExtraFiles = []*os.File{lnf, w, pidf}

	// ①忽略其他信号: in the daemon (see daemon); a Go program resets them as it starts.

	// ②自成会话: setsid() in the child, which is no group leader, so it succeeds; the post forks
	// for this. A session leader could gain a terminal by opening one; echod opens none, so it
	// needs no second fork (daemon(7)).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ③更改工作目录: in the daemon (see daemon).

	// ④重定向标准输入与输出: nil Stdin and Stdout are /dev/null; stderr is the log, for a panic.
	cmd.Stderr = logf

	err = cmd.Start()
	w.Close() // the daemon's now: we read until its word, or its end
	if err != nil {
		return 0, err
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, _ := io.ReadAll(r)
	if string(msg) == readyMsg {
		return cmd.Process.Pid, nil
	}
	cmd.Process.Kill() // e.g., one that hangs in start-up
	cmd.Wait()
	if len(msg) == 0 {
		msg = fmt.Appendf(nil, "no word from the daemon in start-up (%v)", cmd.ProcessState)
	}
	return 0, errors.New(string(msg))
}

// daemon is the post's Daemon() after exec: the re-executed echod serves with what startDaemon
// passed, and tells it on fd 4 that it is ready, or why not.
func daemon() error {
	os.Unsetenv(daemonEnv) // for us alone

	// ①忽略其他信号: SIGPIPE, SIGHUP (no terminal, no hang-up) and the job-control signals, which
	// would stop us. SIGSTOP, which the post ignores, cannot be. SIGCHLD (the post's SIGCLD) can
	// stay: we start no child.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)

	// ③更改工作目录: -log and -pidfile were opened by our parent, in the directory it ran in.
	err := os.Chdir(*dir)

	ready := os.NewFile(readyFD, "ready")
	var pidf *os.File
	if *pidPath != "" {
		pidf = os.NewFile(pidFD, *pidPath)
	}
	ln, err2 := net.FileListener(os.NewFile(listenerFD, "listener"))
	if err = cmp.Or(err, err2); err == nil {
		err = serve(ln, pidf, ready)
	}
	if err != nil {
		if _, werr := fmt.Fprint(ready, err); werr == nil {
			return nil // our parent prints it
		}
	}
	return err
}
