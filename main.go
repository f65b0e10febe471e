//go:build linux

// Command echod is the post's TCP echo server (RFC 862) with a thread pool, as a daemon, in Go.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

var (
	addr       = flag.String("addr", "127.0.0.1:8080", "listen `address`; port 0 picks a free one")
	workers    = flag.Int("workers", 64, "size of the fixed pool, 1 to 10000")
	queue      = flag.Int("queue", 64, "accepted clients that may wait for a worker, 0 to 100000")
	idle       = flag.Duration("idle", time.Minute, "cut a client that sends or reads nothing so long")
	foreground = flag.Bool("foreground", false, "stay attached: no daemon, log to stderr")
	dir        = flag.String("dir", "/", "the daemon's working `directory`")
	logPath    = flag.String("log", "echod.log", "the daemon's log `file`")
	pidPath    = flag.String("pidfile", "echod.pid", "PID `file`, locked while echod runs")
)

func main() {
	flag.CommandLine.Init("echod", flag.ContinueOnError)
	flag.CommandLine.SetOutput(io.Discard) // a mistake is one line, below; -h, the whole usage
	err := flag.CommandLine.Parse(os.Args[1:])
	const want = "want -workers 1 to 10000, -queue 0 to 100000, -idle above 0 with its unit: 1m"
	_, addrErr := net.ResolveTCPAddr("tcp", *addr)
	*pidPath, _ = filepath.Abs(*pidPath) // from where we started: the daemon changes directory (③)
	*logPath, _ = filepath.Abs(*logPath)
	switch {
	case err == flag.ErrHelp:
		flag.CommandLine.SetOutput(os.Stdout)
		flag.PrintDefaults()
		return
	case err != nil && !strings.HasPrefix(err.Error(), "invalid value"): // e.g., -foregroud
	case err != nil || *workers < 1 || *workers > 10000 || *queue < 0 || *queue > 100000 || *idle <= 0:
		err = fmt.Errorf("%v; %s", cmp.Or(err, errors.New("out of range")), want) // -idle 5, say
	case flag.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", flag.Arg(0))
	case addrErr != nil:
		err = fmt.Errorf("-addr: %v; want host:port, such as 127.0.0.1:8080", addrErr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "echod: %v (echod -h lists the flags)\n", err)
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil))) // in the daemon, the log (④)
	if os.Getenv("_ECHOD_PARENT") != "" {
		err = daemon()
	} else if *foreground {
		err = serve(nil)
	} else {
		err = startDaemon()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echod:", err)
		os.Exit(1)
	}
}

// serve takes the PID file, then is the post's Init() and Run(); ready is nil in -foreground.
func serve(ready func(net.Addr) error) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	pidf, err := lockPID(*pidPath)
	if pidf == nil {
		return err // e.g., already running: before Init, so that it names the daemon
	}
	// Init, in the daemon (the post's comes before Daemon()): the parent prints its error. Go sets
	// SO_REUSEADDR, as the post means to: its SO_REUSEADDR|SO_REUSEPORT is 15, SO_REUSEPORT alone.
	ln, lnErr := net.Listen("tcp", *addr)
	if err = cmp.Or(err, lnErr); err == nil && ready != nil {
		err = ready(ln.Addr())
	}
	if err != nil {
		os.Remove(pidf.Name()) // ours: we hold its lock
		return err
	}
	go func() { // it keeps pidf from the garbage collector, which would close it, and its lock
		slog.Info("stop", "signal", <-stop) // the kernel closes each client's socket as we exit
		os.Remove(pidf.Name())
		os.Exit(0)
	}()
	jobs := make(chan net.Conn, *queue) // the post's ThreadPool<TASK>::Start(), without a singleton
	for range *workers {
		go func() {
			buf := make([]byte, 32<<10)
			for c := range jobs {
				service(c, buf, *idle) // a client at a time, to its end
			}
		}()
	}
	slog.Info("start", "addr", ln.Addr(), "workers", *workers, "pid", os.Getpid())
	for delay := time.Duration(0); ; time.Sleep(delay) { // Run
		c, err := ln.Accept()
		if err != nil { // e.g., EMFILE: the post exits; we back off, 5ms doubling to 1s (net/http)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			slog.Warn("accept", "err", err, "retry", delay)
			continue
		}
		delay = 0
		slog.Info("get a new link", "client", c.RemoteAddr())
		jobs <- c // the pool's Push(): while jobs is full, clients wait in the listen backlog
	}
}

// service is the post's Service(): it sends back all it reads until the client's FIN (io.EOF).
// idle bounds each Read and Write, so a client that sends, or reads, nothing is cut.
func service(c net.Conn, buf []byte, idle time.Duration) (err error) {
	defer func() { c.Close(); slog.Info("quit", "client", c.RemoteAddr(), "err", err) }()
	for err == nil { // the post spins on a read error
		c.SetDeadline(time.Now().Add(idle))
		n, readErr := c.Read(buf)
		if n > 0 {
			_, err = c.Write(buf[:n]) // all of it, unlike write(2)
		}
		err = cmp.Or(err, readErr)
	}
	return err
}

// lockPID opens path, locks it (flock) and writes our pid in it, for make stop. The kernel
// drops the lock when we die, so a file a dead daemon left, naming a stranger now, is no obstacle.
func lockPID(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, err
	} else if fi, _ := f.Stat(); !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("-pidfile %s: not a regular file", path)
	} else if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		var pid string // none yet while a daemon starts
		fmt.Fscan(f, &pid)
		return nil, fmt.Errorf("already running as pid %s (%s is locked)", pid, path)
	} else if at, _ := os.Stat(path); !os.SameFile(fi, at) {
		f.Close()
		return lockPID(path) // a start that failed removed it after we opened it
	} else if err = f.Truncate(0); err == nil { // first: no reader may take a dead daemon's pid
		_, err = fmt.Fprintln(f, os.Getpid())
	}
	return f, err
}
