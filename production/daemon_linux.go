package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"
)

const (
	listenerFD, pairFD, pidFD = 3, 4, 5         // in the daemon: ExtraFiles[i] is fd 3+i
	daemonEnv                 = "_ECHOD_DAEMON" // the inode at pairFD, which a stray variable cannot fake
)

func isDaemon() bool {
	var st syscall.Stat_t
	return syscall.Fstat(pairFD, &st) == nil && os.Getenv(daemonEnv) == fmt.Sprint(st.Ino)
}

// startDaemon is the post's Daemon() for Go, which cannot fork: fork() copies only the calling thread. At the
// first start and every reload, it runs echod with the listener, the locked PID file and a link to it, and
// returns at once: word says nil once the new daemon says ready, or why not (see await).
func startDaemon(ctx context.Context, ln net.Listener, pidf, logf *os.File) (*link, <-chan error) {
	lfi, _ := logf.Stat()
	if pfi, _ := pidf.Stat(); os.SameFile(lfi, pfi) { // by any path; false if pidf is nil
		return nil, failed(errors.New("-pidfile and -log are the same file"))
	}
	sc, _ := ln.(*net.TCPListener).SyscallConn() // not ln.File(): exec's Fd makes it blocking, ours too (golang/go#29277)
	lnfd, err := 0, error(syscall.EBADF)         // if ln is closed, Control calls nothing
	sc.Control(func(fd uintptr) { lnfd, err = syscall.Dup(int(fd)) })
	if err != nil {
		return nil, failed(err)
	}
	lnf := os.NewFile(uintptr(lnfd), "listener")
	defer lnf.Close()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0) // a message, a descriptor
	if err != nil {
		return nil, failed(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "pair"), os.NewFile(uintptr(fds[1]), "pair")
	defer ours.Close()
	defer theirs.Close() // the daemon's, once it started: we read EOF once it is gone

	if _, _, e := syscall.Syscall(436, 3, ^uintptr(0), 4); e != 0 { // close_range(3, ~0, CLOEXEC): a shell's fd 251 too
		return nil, failed(fmt.Errorf("daemon mode needs Linux 5.11 or later (or -foreground): close_range: %v", e))
	}
	fi, _ := theirs.Stat()
	argv, err := daemonArgs()
	if err != nil {
		return nil, failed(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...) // a reload runs what is at the path by then
	if _, err := os.Stat(cmd.Path); err != nil {
		slog.Warn("running this binary again", "err", err) // e.g., go run removed it
		cmd.Path, cmd.Err = "/proc/self/exe", nil          // this once: argv[0] stays, for the next reload
	}
	cmd.Env = append(os.Environ(), daemonEnv+"="+fmt.Sprint(fi.Sys().(*syscall.Stat_t).Ino))
	cmd.ExtraFiles = []*os.File{lnf, theirs, pidf}
	// ①忽略其他信号 and ③更改工作目录 are the daemon's own (see daemon).

	// ②自成会话: setsid() in the child, which is no group leader, so it succeeds. A session leader
	// could gain a terminal by opening one; echod opens none, so needs no second fork (daemon(7)).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// ④重定向标准输入与输出: nil Stdin and Stdout are /dev/null; stderr goes to the log, for a panic's trace.
	cmd.Stderr = logf

	c, err := net.FileConn(ours) // a copy, non-blocking, so it takes a deadline
	if err != nil {
		return nil, failed(err)
	} else if err = cmd.Start(); err != nil {
		c.Close()
		return nil, failed(err)
	}
	pair, word := c.(*net.UnixConn), make(chan error, 1)
	go func() { word <- await(ctx, cmd, pair) }()
	return &link{cmd.Process.Pid, pair}, word
}

// await waits for the new daemon's word on its pair: nil once it serves. Else it kills it with its process group, at
// once if it exits (even if a child of its holds the pair), says why not, stays silent for 10s, or ctx ends.
func await(ctx context.Context, cmd *exec.Cmd, pair *net.UnixConn) error {
	ctx, cancel := context.WithTimeoutCause(ctx, 10*time.Second, errors.New("no word from it in 10s"))
	defer cancel()
	context.AfterFunc(ctx, func() { pair.SetReadDeadline(time.Now()) })
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pair.SetReadDeadline(time.Now().Add(100 * time.Millisecond)) // for its last word, not for a child's
		exited <- err
	}()
	msg := make([]byte, 4096)
	n, _ := pair.Read(msg)
	if msg = msg[:n]; string(msg) == readyMsg && ctx.Err() == nil {
		return nil
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // its process group (a session leader's): a wrapper's children too
	pair.Close()
	status := <-exited
	if ctx.Err() != nil {
		return fmt.Errorf("start-up of pid %d stopped: %w", cmd.Process.Pid, context.Cause(ctx))
	} else if len(msg) > 0 {
		return errors.New(string(msg)) // the daemon's own words
	}
	return fmt.Errorf("pid %d ended in start-up without a word, %v", cmd.Process.Pid, status)
}

// daemonArgs is our command line with every path absolute: no reload needs the directory we started in.
func daemonArgs() (argv []string, err error) {
	exe, lookErr := exec.LookPath(os.Args[0]) // as the shell found us, also by PATH=.; a path stays as it is
	if lookErr == nil || errors.Is(lookErr, exec.ErrDot) {
		exe, err = filepath.Abs(exe)
	}
	argv = []string{cmp.Or(exe, os.Args[0])}
	flag.VisitAll(func(f *flag.Flag) {
		v, isPath := f.Value.String(), f.Name == "dir" || f.Name == "log" || f.Name == "pidfile"
		if isPath && v != "" && err == nil {
			v, err = filepath.Abs(v)
		}
		if isPath || v != f.DefValue {
			argv = append(argv, "-"+f.Name+"="+v)
		}
	})
	if err != nil { // e.g., -dir . in a directory since removed
		return nil, fmt.Errorf("the directory echod runs in is gone (%v): give absolute paths, or start elsewhere", err)
	}
	return argv, nil
}

// daemon is the re-executed echod: it takes what startDaemon passed, and finishes the four steps.
func daemon(pidPath, dir, logPath string) error {
	os.Unsetenv(daemonEnv) // for us alone

	// ①忽略其他信号: SIGPIPE (see main), and the job-control signals, which stop us. SIGSTOP, which the
	// post ignores, cannot be. SIGCHLD stays: ignored, a reload's Wait gets ECHILD. SIGHUP, which a
	// closing terminal sends, means reload (see run): a daemon has no terminal (daemon(7)).
	signal.Ignore(syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)

	var pidf *os.File
	if pidPath != "" {
		pidf = os.NewFile(pidFD, pidPath)
	}
	f := os.NewFile(pairFD, "pair")
	c, err := net.FileConn(f) // to the echod that started us
	if f.Close(); err != nil {
		return err
	}
	parent := &link{os.Getppid(), c.(*net.UnixConn)}
	ln, err := listenerAt(listenerFD)
	if err == nil {
		err = os.Chdir(dir) // ③更改工作目录
	}
	if err == nil {
		err = run(ln, parent, pidf, func(ctx context.Context) (*link, <-chan error) { // 热重启
			// Our log, too, anew by path: after logrotate, a failure's reason, and the new daemon, go to -log.
			if f, err := openLog(logPath); err == nil {
				syscall.Dup3(int(f.Fd()), 2, 0)
				f.Close()
			}
			var now syscall.Timespec // CLOCK_MONOTONIC (1), which RELOADING=1 carries
			syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&now)), 0)
			sdNotify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", now.Nano()/1e3))
			return startDaemon(ctx, ln, pidf, os.Stderr) // as the first start did; run awaits its word
		})
	}
	if err != nil {
		if _, werr := fmt.Fprint(parent, err); werr == nil {
			return nil // our parent prints it, or logs it at a reload; not twice
		}
	}
	return err
}
