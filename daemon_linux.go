package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	daemonEnv                  = "_ECHOD_DAEMON" // tells the re-executed binary that it is the daemon
	readyMsg                   = "ready\n"       // on the readiness pipe; anything else, or EOF, is failure
	listenerFD, readyFD, pidFD = 3, 4, 5         // in the daemon: ExtraFiles[i] is fd 3+i
)

// daemonize is the post's Daemon() for Go, which cannot fork: fork() copies
// only the calling thread, and the Go runtime always has several. So echod
// re-executes itself, passing the listener, the PID file and a pipe on which
// the daemon reports readiness. On success the parent prints the pid and exits.
func daemonize(ln *net.TCPListener, logf, pidf *os.File) error {
	lnf, err := ln.File()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	// /proc/self/exe, not os.Args[0]: it works under `go run` and even if the
	// binary on disk has been replaced.
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0] // what ps shows
	cmd.Env = append(os.Environ(), daemonEnv+"=1")
	cmd.ExtraFiles = []*os.File{lnf, w, pidf}

	// ①忽略信号: the child's job, in inherit, as a Go program starts with
	// its own signal handlers whatever it inherits.

	// ②自成会话: setsid() in the child before exec; a new process is no
	// group leader, so it succeeds. The daemon is then a session leader, which
	// could gain a controlling terminal by opening one; echod never opens a
	// terminal, so it needs no second fork (daemon(7)).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ③更改工作目录: the child does chdir before exec. Check first, as
	// Start would blame a bad -dir on the executable.
	if fi, err := os.Stat(*dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("-dir %s: no such directory", *dir)
	}
	cmd.Dir = *dir

	// ④重定向标准输入输出: nil Stdin and Stdout are /dev/null. Stderr goes to
	// the log rather than /dev/null, so a panic's trace is kept.
	cmd.Stderr = logf

	// Close-on-exec for every descriptor we inherited (a shell's fd 251,
	// say), or the daemon would hold it open for good; ExtraFiles still pass.
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, e := range fds {
		if fd, _ := strconv.Atoi(e.Name()); fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	w.Close() // so that the read below ends at EOF once the child is gone
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := io.ReadAll(r)
	if string(msg) == readyMsg {
		fmt.Printf("echod: daemon pid %d listening on %s (log %s)\n", cmd.Process.Pid, ln.Addr(), logf.Name())
		os.Exit(0)
	}
	cmd.Process.Kill() // nothing may be left running after a failed start
	cmd.Wait()
	if len(msg) == 0 {
		return fmt.Errorf("the daemon died or hung in start-up (%v); see %s", err, logf.Name())
	}
	return errors.New(strings.TrimSpace(string(msg)))
}

// inherit is the child's half of setup: it takes back what daemonize passed.
func inherit() (ln net.Listener, pidf, ready *os.File, err error) {
	os.Unsetenv(daemonEnv)                                                // or a program we start would think it is the daemon too
	os.WriteFile("/proc/self/comm", []byte(filepath.Base(os.Args[0])), 0) // "echod" for ps and pkill, not "exe"

	// ①忽略信号: SIGHUP kills us when our terminal closes, SIGPIPE when fd 1
	// or 2 is a closed pipe (a socket just returns EPIPE), and the job-control
	// signals stop us. SIGSTOP, which the post ignores, cannot be ignored.
	// SIGCHLD stays: ignored, the kernel reaps children, and Wait gets ECHILD.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)

	ready = os.NewFile(readyFD, "ready")
	setLogger(os.Stderr) // the log file, see ④
	if *pidPath != "" {
		name, _ := os.Readlink(fmt.Sprint("/proc/self/fd/", pidFD)) // absolute, unlike -pidfile
		pidf = os.NewFile(pidFD, name)
	}
	f := os.NewFile(listenerFD, "listener")
	defer f.Close()
	ln, err = net.FileListener(f)
	return ln, pidf, ready, err
}

// lockPID opens path and takes an exclusive flock. The lock belongs to the
// open file, so it passes to the daemon with the descriptor and dies with
// it: a PID file left by a dead daemon is never locked.
func lockPID(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644) // no O_TRUNC: it may be another daemon's
	if err != nil {
		return nil, err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		pid, _ := os.ReadFile(path)
		err = fmt.Errorf("already running as pid %s (%s is locked)", strings.TrimSpace(string(pid)), path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	fi, _ := f.Stat()
	if at, _ := os.Stat(path); !os.SameFile(fi, at) { // false if path is gone
		f.Close() // a stopping daemon removed it after we opened it: try again
		return lockPID(path)
	}
	return f, nil
}

// writePID replaces the PID file's contents with our pid, once we hold its lock.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}
