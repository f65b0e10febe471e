package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

const daemonEnv = "_ECHOD_PARENT" // our pid, in the daemon's environment: a stray one is no pid

func isDaemon() bool { return os.Getenv(daemonEnv) == strconv.Itoa(os.Getppid()) }

// startDaemon is the post's Daemon(). Go cannot fork(), which copies only the calling thread, so
// echod runs itself again, and waits for the daemon's word: an error reaches the terminal, and
// a failed start leaves nothing running, nor a log that it made for nothing.
func startDaemon() (err error) {
	_, statErr := os.Stat(*logPath)
	logf, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if fi, _ := logf.Stat(); err != nil && os.IsNotExist(statErr) && fi.Size() == 0 {
			os.Remove(*logPath) // a daemon's panic in it stays
		}
	}()
	exe, err := os.Executable() // where /proc/self/exe points, also under go run
	r, w, pipeErr := os.Pipe()
	fds, fdErr := os.ReadDir("/proc/self/fd") // see ④; if it fails, we refuse to start
	if err = errors.Join(err, pipeErr, fdErr); err != nil {
		return err
	}
	cmd := exec.Command(exe, append(os.Args[1:], "-pidfile="+*pidPath)...)
	cmd.Env = append(os.Environ(), daemonEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the daemon

	// ①忽略其他信号 and ③更改工作目录: in the daemon (see daemon).

	// ②自成会话: setsid() in the child, which is no group leader, so it succeeds; the post forks
	// for that. A session leader could gain a terminal by opening one; echod opens none.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ④重定向标准输入与输出: nil Stdin and Stdout are /dev/null; stderr is the log, for a panic.
	// No other descriptor reaches the daemon, not one the shell left without close-on-exec.
	cmd.Stderr = logf
	for _, fd := range fds {
		if n, _ := strconv.Atoi(fd.Name()); n > 2 {
			syscall.CloseOnExec(n)
		}
	}

	err = cmd.Start()
	w.Close() // the daemon's now: we read until its word, or its end
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(r)
	if addr, ok := strings.CutPrefix(string(msg), "ready "); ok {
		fmt.Printf("echod: daemon pid %d listening on %s (log %s)\n", cmd.Process.Pid, addr, logf.Name())
		return nil
	} else if cmd.Wait(); len(msg) == 0 {
		msg = fmt.Appendf(nil, "the daemon ended without a word (%v)", cmd.ProcessState)
	}
	return errors.New(string(msg))
}

// daemon is echod run again by startDaemon: it serves, and tells its parent on fd 3 that it is
// ready, or why not.
func daemon() error {
	// ①忽略其他信号: here, as a Go program resets them when it starts. SIGPIPE; SIGHUP, since no
	// terminal hangs up on us; the job-control signals, which would stop us. SIGSTOP, which the
	// post ignores, cannot be; SIGCHLD (the post's SIGCLD) can stay, as we start no child.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)

	// ③更改工作目录: here, so that a bad -dir is the daemon's error, for its parent to print.
	err := os.Chdir(*dir)

	ready := os.NewFile(3, "ready")
	if err == nil {
		err = serve(ready)
	}
	if _, werr := fmt.Fprint(ready, err); err != nil && werr == nil {
		return nil // our parent prints it
	}
	return err
}
