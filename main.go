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
	if err := checkFlags(); err != nil {
		fmt.Fprintln(os.Stderr, "echod:", err)
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
		if ready != nil {
			fmt.Fprintln(ready, "echod:", err) // the parent prints it on the terminal
		}
		os.Exit(1)
	}
	slog.Info("start", "addr", ln.Addr(), "workers", *workers, "pid", os.Getpid())
	if ready != nil {
		ready.WriteString(readyMsg)
		ready.Close()
	}
	serve(ctx, ln, *workers, *queue, *idle, *grace)
	if pidf != nil {
		os.Remove(pidf.Name())
	}
	slog.Info("stop")
}

func checkFlags() error {
	switch {
	case flag.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", flag.Arg(0))
	case *workers < 1, *queue < 0:
		return errors.New("-workers must be at least 1 and -queue at least 0")
	case *idle <= 0, *grace < 0:
		return errors.New("-idle must be positive and -grace not negative")
	}
	return nil
}

// setup binds the listener, opens the log and locks the PID file. In daemon
// mode it never returns in the parent: daemonize execs the child, whose setup
// inherits all three and returns the pipe on which it reports readiness.
func setup() (ln net.Listener, pidf, ready *os.File, err error) {
	if isDaemonChild() {
		return inherit()
	}
	if ln, err = net.Listen("tcp", *addr); err != nil {
		return nil, nil, nil, err // e.g., address already in use: still on the terminal
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	logf := os.Stderr
	if !*foreground || set["log"] {
		if logf, err = os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return nil, nil, nil, err
		}
	}
	if (!*foreground || set["pidfile"]) && *pidPath != "" {
		if pidf, err = lockPID(*pidPath); err != nil {
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
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})))
}

// server tracks the connections its workers are serving, so that shutdown
// can close them once the grace period is over.
type server struct {
	idle   time.Duration
	mu     sync.Mutex
	active map[net.Conn]struct{} // nil once closeAll has run
}

// serve runs the pool on ln until ctx is done, then shuts down as net/http's
// Shutdown does: stop accepting, let connections finish for up to grace,
// then close whatever is left.
func serve(ctx context.Context, ln net.Listener, workers, queue int, idle, grace time.Duration) {
	s := &server{idle: idle, active: map[net.Conn]struct{}{}}
	jobs := make(chan net.Conn, queue)
	var wg sync.WaitGroup
	for id := range workers {
		wg.Go(func() { s.worker(id, jobs) })
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() }) // new clients are now refused
	defer stop()
	accept(ctx, ln, jobs)
	close(jobs)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.closeAll()
		<-done
	}
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
// pool threads. Its buffer is reused, so echoing allocates nothing.
func (s *server) worker(id int, jobs <-chan net.Conn) {
	buf := make([]byte, 32<<10)
	for c := range jobs {
		if s.track(c, true) {
			start := time.Now()
			n, err := s.echo(c, buf)
			s.track(c, false)
			slog.Debug("conn", "worker", id, "remote", c.RemoteAddr(), "bytes", n, "time", time.Since(start), "err", err)
		}
		c.Close()
	}
}

// echo sends back everything c sends until c half-closes (RFC 862). The
// deadline makes a client that stops sending or stops reading give its
// worker back after s.idle; without it, N silent clients stop N workers.
func (s *server) echo(c net.Conn, buf []byte) (n int64, err error) {
	for {
		c.SetDeadline(time.Now().Add(s.idle))
		nr, rerr := c.Read(buf)
		if nr > 0 {
			nw, werr := c.Write(buf[:nr]) // unlike write(2), returns only when all is written or it fails
			n += int64(nw)
			if werr != nil {
				return n, werr // e.g., the client reset, or stopped reading for s.idle
			}
		}
		if rerr == io.EOF {
			return n, nil // the client's FIN: everything before it is echoed
		}
		if rerr != nil {
			return n, rerr // e.g., idle timeout; the post spins here forever
		}
	}
}

// track adds c to or removes it from the active set; after closeAll it
// refuses, and the worker closes c at once.
func (s *server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		return false
	}
	if add {
		s.active[c] = struct{}{}
	} else {
		delete(s.active, c)
	}
	return true
}

func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.active {
		c.Close()
	}
	s.active = nil
}
