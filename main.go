// Command echod is the post's thread-pool TCP echo server (RFC 862), run as a daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

var (
	addr       = flag.String("addr", "127.0.0.1:8080", "listen `address`; port 0 picks a free port")
	workers    = flag.Int("workers", 64, "size of the fixed pool")
	queue      = flag.Int("queue", 64, "capacity of the channel of accepted connections")
	idle       = flag.Duration("idle", time.Minute, "close a connection that makes no progress for this long")
	grace      = flag.Duration("grace", 5*time.Second, "on SIGTERM/SIGINT, how long connections in flight may finish")
	foreground = flag.Bool("foreground", false, "stay attached: no daemon, log to stderr")
	dir        = flag.String("dir", "/", "the daemon's working `directory`")
	logPath    = flag.String("log", "echod.log", "the daemon's log `file`")
	pidPath    = flag.String("pidfile", "echod.pid", "the daemon's PID `file`, locked while it runs")
	verbose    = flag.Bool("v", false, "debug logging: one line per connection")
)

func main() {
	flag.Parse()
	if flag.NArg() > 0 || *workers < 1 || *queue < 0 || *idle <= 0 || *grace < 0 {
		fmt.Fprintln(os.Stderr, "echod: want no arguments, -workers > 0, -queue >= 0, -idle > 0, -grace >= 0")
		flag.Usage()
		os.Exit(2)
	}
	ln, pidf, ready, err := setup()
	// Catch SIGTERM before the pid is published, so that stopping is always graceful.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err == nil && pidf != nil {
		err = writePID(pidf)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echod:", err)
		fmt.Fprintln(ready, err) // for the parent to print; a no-op when ready is nil (not a daemon)
		os.Exit(1)
	}
	slog.Info("start", "addr", ln.Addr(), "workers", *workers, "pid", os.Getpid())
	ready.WriteString(readyMsg) // a no-op when nil, as above
	ready.Close()
	serve(ctx, ln, *workers, *queue, *idle, *grace)
	if pidf != nil {
		os.Remove(pidf.Name())
	}
	slog.Info("stop")
}

// setup locks the PID file, binds the listener and opens the log. In daemon
// mode the parent returns only on failure: daemonize starts the daemon, whose
// setup inherits all three and returns the pipe on which it reports readiness.
func setup() (ln net.Listener, pidf, ready *os.File, err error) {
	if os.Getenv(daemonEnv) == "1" {
		return inherit()
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// The PID file first, so a second start names the running daemon.
	if (!*foreground || set["pidfile"]) && *pidPath != "" {
		if pidf, err = lockPID(*pidPath); err != nil {
			return nil, nil, nil, err
		}
	}
	if ln, err = net.Listen("tcp", *addr); err != nil {
		return nil, nil, nil, err // e.g., address already in use: still on the terminal
	}
	logf := os.Stderr
	if !*foreground || set["log"] {
		if logf, err = os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return nil, nil, nil, err
		}
	}
	if !*foreground {
		return nil, nil, nil, daemonize(ln.(*net.TCPListener), logf, pidf)
	}
	setLogger(logf)
	return ln, pidf, nil, nil
}

func setLogger(w io.Writer) {
	opts := &slog.HandlerOptions{}
	if *verbose {
		opts.Level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(w, opts)))
}

// serve runs the pool on ln until ctx is done, then shuts down as net/http's
// Shutdown does: stop accepting, let connections finish for up to grace,
// then close whatever is left.
func serve(ctx context.Context, ln net.Listener, workers, queue int, idle, grace time.Duration) {
	hard, cut := context.WithCancel(context.Background()) // cut: the grace period is over
	defer cut()
	jobs := make(chan net.Conn, queue)
	var wg sync.WaitGroup
	for id := range workers {
		wg.Go(func() { worker(hard, id, jobs, idle) })
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() }) // new clients are now refused
	defer stop()
	accept(ctx, ln, jobs)
	close(jobs)
	defer time.AfterFunc(grace, cut).Stop() // the timer starts now
	wg.Wait()
}

// accept hands each new connection to the pool until ln is closed. When every
// worker is busy and jobs is full, it waits on the send, and further clients
// wait in the kernel's listen backlog: backpressure, not loss. This is the
// post's ThreadPool<TASK>, without the singleton.
func accept(ctx context.Context, ln net.Listener, jobs chan<- net.Conn) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// e.g., EMFILE, out of descriptors: the post exits here and the
			// daemon dies. Back off instead, 5ms doubling to 1s, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			slog.Warn("accept", "err", err, "retry", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		select {
		case jobs <- c:
		case <-ctx.Done():
			c.Close() // accepted as we shut down: as good as refused
			return
		}
	}
}

// worker serves connections from jobs one at a time, like one of the post's
// pool threads. Its buffer is reused, so echoing allocates nothing; in make
// bench, bulk echo costs 12% more CPU with 64 KiB and 50% more with 16 KiB.
func worker(hard context.Context, id int, jobs <-chan net.Conn, idle time.Duration) {
	buf := make([]byte, 32<<10)
	for c := range jobs {
		stop := context.AfterFunc(hard, func() { c.Close() }) // at once, if already cut
		start := time.Now()
		n, err := echo(c, buf, idle)
		stop()
		c.Close()
		if *verbose { // the arguments alone allocate
			slog.Debug("conn", "worker", id, "remote", c.RemoteAddr(), "bytes", n, "time", time.Since(start), "err", err)
		}
	}
}

// echo sends back everything c sends until c half-closes (RFC 862). The
// deadline makes a client that stops sending or stops reading give its
// worker back after idle; without it, N silent clients stop N workers.
func echo(c net.Conn, buf []byte, idle time.Duration) (n int64, err error) {
	var moved time.Time
	for {
		// A deadline move is a timer update, 2.5% of a round trip: move it only
		// every idle/8, idle/8 further, so a stalled client is cut in idle..9/8 idle.
		if now := time.Now(); now.Sub(moved) >= idle/8 {
			c.SetDeadline(now.Add(idle + idle/8))
			moved = now
		}
		nr, rerr := c.Read(buf)
		if nr > 0 {
			nw, werr := c.Write(buf[:nr]) // unlike write(2), returns only when all is written or it fails
			n += int64(nw)
			if werr != nil {
				return n, werr // e.g., the client reset, or stopped reading for idle
			}
		}
		if rerr == io.EOF {
			return n, nil // the client's FIN: everything before it is echoed
		} else if rerr != nil {
			return n, rerr // e.g., idle timeout; the post spins here forever
		}
	}
}
