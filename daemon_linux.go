package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// startDaemon is the post's Daemon(). Go cannot fork(), which copies only the calling thread, so
// echod runs itself again, and waits for its word: it is ready, or why not, for the terminal.
func startDaemon() error {
	exe, err := os.Executable() // where /proc/self/exe points, also under go run
	r, w, pipeErr := os.Pipe()
	fds, fdErr := os.ReadDir("/proc/self/fd") // see ④; if it fails, we refuse to start
	if err = cmp.Or(err, pipeErr, fdErr); err != nil {
		return err
	}
	var args []string // our flags, -log and -pidfile from / (see main)
	flag.VisitAll(func(f *flag.Flag) { args = append(args, "-"+f.Name+"="+f.Value.String()) })
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "_ECHOD_PARENT="+strconv.Itoa(os.Getpid()))

	// ①忽略其他信号 and ③更改工作目录: in the daemon (see daemon).

	// ②自成会话: setsid() in the child before exec, so it is never in the terminal's process
	// group, where Ctrl-C reaches; it is no group leader, so setsid succeeds (the post forks for
	// that). A session leader could gain a terminal by opening one; echod opens none.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ④重定向标准输入与输出: nil Stdin and Stdout are /dev/null; stderr is a pipe to us
	// until it serves, then its log (toLog), so we print its errors. No fd the shell left leaks.
	cmd.Stderr = w
	for _, fd := range fds {
		if n, _ := strconv.Atoi(fd.Name()); n > 2 {
			syscall.CloseOnExec(n)
		}
	}

	err = cmd.Start()
	w.Close() // the daemon's now: we read until it writes to its log, or ends (at once if no start)
	msg, _ := io.ReadAll(r)
	if out, addr, ok := strings.Cut(string(msg), "\nready "); ok {
		fmt.Fprint(os.Stderr, out) // what the daemon's runtime wrote first, for GODEBUG, say
		fmt.Println("echod: daemon pid", cmd.Process.Pid, "listening on", addr, "(log", *logPath+")")
		return nil
	} else if err != nil {
		return err // it did not start
	} else if cmd.Wait(); len(msg) == 0 {
		msg = fmt.Appendf(nil, "the daemon ended without a word (%v)", cmd.ProcessState)
	}
	return errors.New(strings.TrimSpace(strings.TrimPrefix(string(msg), "echod: ")))
}

// daemon is echod run again by startDaemon: it ends the four steps, and serves.
func daemon() error {
	// ①忽略其他信号: here, as a Go program resets them when it starts. SIGPIPE; SIGHUP,
	// as no terminal hangs up on us; the job-control signals, which would stop us. SIGSTOP,
	// which the post ignores, cannot be; SIGCHLD (the post's SIGCLD) can stay: we start none.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)

	// ③更改工作目录: here, so that a bad -dir is the daemon's error, which its parent prints.
	if os.Getenv("_ECHOD_PARENT") != strconv.Itoa(os.Getppid()) {
		return errors.New("the echod that started this daemon is gone") // killed as we started
	} else if err := os.Chdir(*dir); err != nil {
		return err
	}
	return serve(toLog)
}

// toLog ends ④: it tells our parent we serve, then logs to -log (a FIFO nobody reads fails).
func toLog(addr net.Addr) error {
	f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprint(os.Stderr, "\nready ", addr) // fails if our parent is gone: the log says so
	return errors.Join(syscall.Dup3(int(f.Fd()), 2, 0), err)
}
