package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

const daemonEnv = "_ECHOD_PARENT" // in the daemon's environment: our pid, which no stray one names

func isDaemon() bool { return os.Getenv(daemonEnv) == strconv.Itoa(os.Getppid()) }

// startDaemon is the post's Daemon(). Go cannot fork(), which copies only the calling thread, so
// echod runs itself again. We wait for the daemon's word: an error reaches the terminal, and a
// failed start leaves nothing running.
func startDaemon(ln net.Listener, pidf, logf *os.File) (int, error) {
	exe, err := os.Executable() // where /proc/self/exe points, also under go run
	if err != nil {
		return 0, err
	}
	lnf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, append(os.Args[1:], "-pidfile="+*pidPath)...)
	cmd.Args[0] = os.Args[0] // for ps
	cmd.Env = append(os.Environ(), daemonEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.ExtraFiles = []*os.File{lnf, w, pidf} // fds 3, 4 and 5 in the daemon

	// ①忽略其他信号: in the daemon, after exec (see daemon): a Go program resets them as it starts.

	// ②自成会话: setsid() in the child, which is no group leader, so it succeeds; the post forks
	// for that. A session leader could gain a terminal by opening one; echod opens none (daemon(7)).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ③更改工作目录: here, which the daemon inherits, so that a bad -dir shows on the terminal.
	if err := os.Chdir(*dir); err != nil {
		return 0, err
	}

	// ④重定向标准输入与输出: nil Stdin and Stdout are /dev/null; stderr is the log, for a panic.
	// No other descriptor reaches the daemon, not even one the shell left without close-on-exec.
	cmd.Stderr = logf
	fds, err := os.ReadDir("/proc/self/fd") // if this fails, we refuse to start
	for _, fd := range fds {
		if n, _ := strconv.Atoi(fd.Name()); n > 2 {
			syscall.CloseOnExec(n)
		}
	}

	if err == nil {
		err = cmd.Start()
	}
	w.Close() // the daemon's now: we read until its word, or its end
	if err != nil {
		return 0, err
	}
	msg, _ := io.ReadAll(r)
	if string(msg) == readyMsg {
		return cmd.Process.Pid, nil
	} else if cmd.Wait(); len(msg) == 0 {
		msg = fmt.Appendf(nil, "the daemon ended in start-up without a word (%v)", cmd.ProcessState)
	}
	return 0, errors.New(string(msg))
}

// daemon is echod run again by startDaemon: it serves, and tells its parent that it is ready,
// or why not.
func daemon() error {
	os.Unsetenv(daemonEnv) // for us alone

	// ①忽略其他信号: SIGPIPE; SIGHUP, since no terminal hangs up on us; the job-control signals,
	// which would stop us. SIGSTOP, which the post ignores, cannot be; SIGCHLD (the post's SIGCLD)
	// can stay, as we start no child.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)

	var pidf *os.File
	if *pidPath != "" {
		pidf = os.NewFile(5, *pidPath)
	}
	ready := os.NewFile(4, "ready")
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err == nil {
		err = serve(ln, pidf, ready)
	}
	if _, werr := fmt.Fprint(ready, err); err != nil && werr == nil {
		return nil // our parent prints it
	}
	return err
}
