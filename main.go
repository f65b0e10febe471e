// Command echod is the post's TCP server with a thread pool, in Go, run as a daemon: it echoes
// every byte (RFC 862). production/ is the same server as you would deploy it.
package main

import (
	"errors"
	"flag"
	"fmt"
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
	addr       = flag.String("addr", "127.0.0.1:8080", "listen `address`; port 0 picks a free port")
	workers    = flag.Int("workers", 64, "size of the fixed pool, 1 to 10000")
	queue      = flag.Int("queue", 64, "accepted clients that may wait for a worker, 0 to 100000")
	idle       = flag.Duration("idle", time.Minute, "cut a client that sends or reads nothing this long")
	foreground = flag.Bool("foreground", false, "stay attached: no daemon, log to stderr")
	dir        = flag.String("dir", "/", "the daemon's working `directory`")
	logPath    = flag.String("log", "echod.log", "the daemon's log `file`")
	pidPath    = flag.String("pidfile", "echod.pid", "the daemon's PID `file`, locked while it runs")
)

func main() {
	flag.Parse()
	if err := checkFlags(); err != nil {
		fmt.Fprintf(os.Stderr, "echod: %v (echod -h lists the flags)\n", err)
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil))) // in the daemon, the log (④)
	if err := launch(); err != nil {
		fmt.Fprintln(os.Stderr, "echod:", err)
		os.Exit(1)
	}
}

func checkFlags() error {
	_, port, err := net.SplitHostPort(*addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	switch {
	case flag.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", flag.Arg(0))
	case err != nil:
		return fmt.Errorf("-addr: %v; want host:port, such as 127.0.0.1:8080", err)
	case *workers < 1 || *workers > 10000:
		return errors.New("-workers must be 1 to 10000")
	case *queue < 0 || *queue > 100000:
		return errors.New("-queue must be 0 to 100000")
	case *idle <= 0:
		return errors.New("-idle must be above 0, such as 1m")
	}
	return nil
}

// launch takes the PID file and the socket, then serves here (-foreground) or starts the daemon.
func launch() (err error) {
	if isDaemon() {
		return daemon()
	}
	var pidf *os.File
	usePID := !*foreground // in the foreground, only if -pidfile is given
	flag.Visit(func(f *flag.Flag) { usePID = usePID || f.Name == "pidfile" })
	if usePID && *pidPath != "" {
		*pidPath, _ = filepath.Abs(*pidPath) // the daemon removes it at a stop, from -dir
		defer removeIfNew(*pidPath)(&err)
		if pidf, err = lockPID(*pidPath); err != nil {
			return err // e.g., already running: before listen, so that it names the daemon
		}
	}
	ln, err := listen(*addr)
	if err != nil {
		return err // e.g., address already in use: still on the terminal
	} else if *foreground {
		return serve(ln, pidf, nil)
	}
	defer removeIfNew(*logPath)(&err)
	logf, err := openLog(*logPath)
	if err != nil {
		return err
	}
	pid, err := startDaemon(ln, pidf, logf)
	if err == nil {
		fmt.Printf("echod: daemon pid %d listening on %s (log %s)\n", pid, ln.Addr(), *logPath)
	}
	return err
}

// Init is the post's Init(): socket, bind and listen in one call. Go sets SO_REUSEADDR, as
// the post does; the backlog is the kernel's somaxconn, not the post's 10.
func listen(address string) (net.Listener, error) { return net.Listen("tcp", address) }

const readyMsg = "ready\n" // the daemon's word to its parent: it serves

// serve is the post's Run(), up to SIGTERM or SIGINT: it starts the pool, says it is ready, and
// hands each new client to a worker. ready is nil in -foreground.
func serve(ln net.Listener, pidf *os.File, ready *os.File) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	jobs := startPool(*workers, *queue, *idle)
	if err := writePID(pidf); err != nil {
		return err
	}
	slog.Info("start", "addr", ln.Addr(), "workers", *workers, "pid", os.Getpid())
	if ready != nil {
		if _, err := ready.WriteString(readyMsg); err != nil { // our parent was killed
			removePID(pidf)
			return err
		}
		ready.Close()
	}
	go accept(ln, jobs)
	slog.Info("stop", "signal", <-stop) // the kernel closes every client's socket as we exit
	removePID(pidf)
	return nil
}

// accept queues each new client. Once the queue is full, new clients wait in the kernel's
// backlog: none is lost.
func accept(ln net.Listener, jobs chan<- net.Conn) {
	for delay := time.Duration(0); ; {
		c, err := ln.Accept()
		if err != nil { // e.g., EMFILE: the post exits; we back off, 5ms doubling to 1s (net/http)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			slog.Warn("accept", "err", err, "retry", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		slog.Info("get a new link", "client", c.RemoteAddr())
		jobs <- c
	}
}

// startPool is the post's ThreadPool<TASK>::Start(): a fixed set of workers, which take clients
// from a channel, its Push(). A worker serves one client at a time.
func startPool(workers, queue int, idle time.Duration) chan<- net.Conn {
	jobs := make(chan net.Conn, queue)
	for range workers {
		go func() {
			buf := make([]byte, 32<<10)
			for c := range jobs {
				err := service(c, buf, idle)
				c.Close()
				slog.Info("quit", "client", c.RemoteAddr(), "err", err)
			}
		}()
	}
	return jobs
}

// service is the post's Service(): it sends back all it reads until the client's FIN, then
// returns io.EOF. idle bounds each Read and Write, so a client that sends nothing, or reads
// nothing, cannot hold a worker for longer.
func service(c net.Conn, buf []byte, idle time.Duration) error {
	for {
		c.SetDeadline(time.Now().Add(idle))
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil { // all of it, unlike write(2)
				return err
			}
		}
		if err != nil {
			return err // io.EOF is the client's FIN; the post spins on a read error
		}
	}
}

// removeIfNew, called before path is opened, returns what removes it after a failed start
// (*err != nil) if the start made it and nothing was written in it: a failed start leaves no
// file behind, but a daemon's panic stays in its log.
func removeIfNew(path string) func(err *error) {
	_, statErr := os.Stat(path)
	return func(err *error) {
		if fi, _ := os.Stat(path); *err != nil && os.IsNotExist(statErr) && fi != nil && fi.Size() == 0 {
			os.Remove(path)
		}
	}
}

func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
}

// lockPID opens path and locks it (flock). The lock passes to the daemon and dies with it, so
// a file that names a dead daemon, or a stranger, is no obstacle.
func lockPID(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if fi, _ := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("-pidfile %s: not a regular file", path)
	} else if err == nil && syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		pid, _ := os.ReadFile(path)
		err = fmt.Errorf("already running as pid %s (%s is locked)", strings.TrimSpace(string(pid)), path)
	} else if err == nil && !isAt(f) {
		f.Close()
		return lockPID(path) // a stopping daemon removed it after we opened it
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// isAt reports whether f is still the file at its path: a stopping daemon may have removed it.
func isAt(f *os.File) bool {
	fi, _ := f.Stat()
	at, _ := os.Stat(f.Name())
	return os.SameFile(fi, at)
}

// writePID writes our pid into the locked file, for make stop (nothing if f is nil).
func writePID(f *os.File) error {
	if f == nil {
		return nil
	}
	b := fmt.Appendln(nil, os.Getpid())
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Truncate(0) // not half a pid: a failed start then removes the file it made
		return err
	}
	return f.Truncate(int64(len(b))) // a stale file's longer pid must not leave a digit behind
}

// removePID removes the PID file at a stop, if it is still ours.
func removePID(f *os.File) {
	if f != nil && isAt(f) {
		os.Remove(f.Name())
	}
}
