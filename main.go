// Command echod is the post's thread-pool TCP echo server (RFC 862), run as a daemon.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	addr       = flag.String("addr", "127.0.0.1:8080", "listen `address`; port 0 picks a free port")
	workers    = flag.Int("workers", 64, "size of the fixed pool")
	queue      = flag.Int("queue", 64, "capacity of the channel of accepted connections")
	idle       = flag.Duration("idle", time.Minute, "close a connection when a read or write waits this long")
	grace      = flag.Duration("grace", 5*time.Second, "on SIGTERM/SIGINT, how long connections may finish; at a reload, how long a Write may block a move")
	foreground = flag.Bool("foreground", false, "stay attached: no daemon, log to stderr, SIGHUP ends it")
	dir        = flag.String("dir", "/", "the daemon's working `directory`")
	logPath    = flag.String("log", "echod.log", "the daemon's log `file` (in -foreground, stderr is the log)")
	pidPath    = flag.String("pidfile", "echod.pid", "the daemon's PID `file`, locked while it runs")
)

func main() {
	flag.Parse()
	if err := checkFlags(); err != nil {
		fmt.Fprintf(os.Stderr, "echod: %v (echod -h lists the flags)\n", err)
		os.Exit(2)
	}
	signal.Ignore(syscall.SIGPIPE)                                 // see ①; in every process, so that `echod | true` exits 0
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil))) // in the daemon, the log file (see ④)
	if err := launch(); err != nil {
		fmt.Fprintln(os.Stderr, "echod:", err)
		os.Exit(1)
	}
}

func checkFlags() error {
	_, port, err := net.SplitHostPort(*addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port) // a number to 65535, or a name in /etc/services
	}
	switch {
	case flag.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", flag.Arg(0))
	case err != nil:
		return fmt.Errorf("-addr: %v", err)
	case *workers < 1:
		return errors.New("-workers must be > 0")
	case *queue < 0:
		return errors.New("-queue must be >= 0")
	case *idle <= 0 || *idle > 100000*time.Hour: // idle + idle/8 must not overflow
		return errors.New("-idle must be > 0 and at most 100000h")
	case *grace < 0:
		return errors.New("-grace must be >= 0")
	}
	return nil
}

// launch takes the PID file and the listener, then serves or starts the daemon; a failed start leaves no file.
func launch() (err error) {
	if isDaemon() && !*foreground {
		return daemon(*pidPath, *dir, *logPath)
	}
	var pidf *os.File
	usePID := !*foreground // in the foreground, only if -pidfile is given
	flag.Visit(func(f *flag.Flag) { usePID = usePID || f.Name == "pidfile" })
	if *pidPath != "" && usePID {
		_, statErr := os.Stat(*pidPath)
		if pidf, err = lockPID(*pidPath); err != nil { // first, so a second start names the running daemon
			return err
		}
		defer func() {
			if err != nil && os.IsNotExist(statErr) {
				os.Remove(*pidPath)
			}
		}()
	}
	ln, err := listen(*addr)
	if err != nil {
		return err // e.g., address already in use: still on the terminal
	}
	if *foreground {
		return run(ln, nil, pidf, nil, nil)
	}
	_, statErr := os.Stat(*logPath)
	logf, err := openLog(*logPath)
	if err != nil {
		return err
	}
	defer func() {
		if fi, _ := logf.Stat(); err != nil && os.IsNotExist(statErr) && fi.Size() == 0 {
			os.Remove(*logPath) // one the daemon wrote in, with a panic's trace, say, stays
		}
		logf.Close()
	}()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP) // while we wait: leave no daemon
	defer stop()
	pid, to, err := startDaemon(ctx, "", ln, pidf, logf)
	if err == nil {
		to.Close() // nothing to move at a first start: the daemon reads EOF
		fmt.Printf("echod: daemon pid %d listening on %s (log %s)\n", pid, ln.Addr(), *logPath)
	}
	return err
}

// listen takes the socket the service manager passed (sd_listen_fds(3)), or binds address.
func listen(address string) (net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v) // for us alone
	}
	if pid != strconv.Itoa(os.Getpid()) {
		return net.Listen("tcp", address) // e.g., no LISTEN_PID, or one meant for our parent
	} else if fds != "1" {
		return nil, fmt.Errorf("LISTEN_FDS=%s: echod takes exactly one socket", fds)
	}
	return listenerAt(3)
}

// listenerAt takes the listening TCP socket that the service manager or our parent put at fd.
func listenerAt(fd int) (net.Listener, error) {
	listening, _ := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close() // the listener has a copy; the service manager keeps its own
	if ln, err := net.FileListener(f); err == nil && listening == 1 && ln.Addr().Network() == "tcp" {
		return ln, nil
	}
	return nil, fmt.Errorf("fd %d is not a listening TCP socket", fd) // and we exit
}

const readyMsg = "ready\n" // from a new daemon; anything else, or EOF, is failure

// run serves ln until SIGTERM or SIGINT or, in a daemon, until a reload on hup hands over.
// A daemon says `ready` over parent, its socket pair to its starter, and takes connections from it.
func run(ln net.Listener, parent *net.UnixConn, pidf *os.File, hup <-chan os.Signal, reload func(context.Context) (int, *net.UnixConn)) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := writePID(pidf, os.Getpid()); err != nil { // only now may anyone signal us
		return err
	}
	sdNotify(fmt.Sprintf("READY=1\nMAINPID=%d", os.Getpid())) // MAINPID: a daemon is not what systemd started
	slog.Info("start", "addr", ln.Addr(), "workers", *workers, "pid", os.Getpid())
	if parent != nil {
		if _, err := io.WriteString(parent, readyMsg); err != nil { // e.g., our parent was killed: nobody would know that we run
			removePID(pidf)
			return fmt.Errorf("telling our parent that we serve: %w", err)
		}
	}
	stopServing, next := make(chan *net.UnixConn, 1), 0 // next: the daemon that took over
	go func() {
		var to *net.UnixConn // our socket pair to next; nil: a stop
		for next == 0 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-hup: // never in the foreground, where hup is nil
				next, to = reload(ctx)
			}
		}
		if next == 0 {
			stop() // the first signal stops gracefully; a second one, at once
			sdNotify("STOPPING=1")
		}
		stopServing <- to
	}()
	moved, cut := serve(stopServing, ln, parent, *workers, *queue, *idle, *grace)
	if next == 0 {
		removePID(pidf)
		slog.Info("stop", "cut", cut)
		return nil
	}
	slog.Info("stop", "handed_over_to", next, "moved", moved, "cut", cut) // the PID file is the new daemon's now
	select {
	case <-ctx.Done(): // a stop during the reload, from one who read our pid, is for the new daemon too
		slog.Info("passing the stop on", "pid", next)
		syscall.Kill(next, syscall.SIGTERM)
	case <-time.After(50 * time.Millisecond): // a handler the kernel has begun may take a moment to reach us
	}
	return nil
}

// serve runs the pool on ln, and on what the old daemon moves to us over from,
// until stop delivers. nil stops as net/http's Shutdown does: stop accepting,
// let connections finish for up to grace, cut the rest. At a reload it is a
// socket pair to the new daemon: each connection moves there at its next safe
// point (传递文件描述符).
func serve(stop <-chan *net.UnixConn, ln net.Listener, from *net.UnixConn, workers, queue int, idle, grace time.Duration) (moved, cut int64) {
	letGo, done := context.WithCancel(context.Background())
	p := &pool{jobs: make(chan net.Conn, queue), idle: idle, letGo: letGo}
	var busy, feeding sync.WaitGroup
	for range workers {
		busy.Go(p.worker)
	}
	feeding.Go(func() { accept(ln, p.jobs) })
	if from != nil {
		feeding.Go(func() { receive(from, p.jobs) })
	}
	go func() {
		p.to, p.cutAt = <-stop, time.Now().Add(grace) // the time when stop delivers
		defer ln.Close()                              // new clients are refused, or, at a reload, wait in the backlog for the new daemon
		if p.to == nil {
			time.AfterFunc(grace, done)
			return
		}
		p.to.SetWriteDeadline(p.cutAt) // a new daemon that stopped reading costs us grace
		busy.Go(p.worker)              // so queued ones move while every worker is in a Write
		done()
	}()
	feeding.Wait()
	close(p.jobs)
	busy.Wait()
	return p.moved.Load(), p.cut.Load()
}

// accept hands each new connection to the pool until ln is closed. With every worker
// busy and jobs full, later clients wait in the listen backlog: backpressure, not loss.
func accept(ln net.Listener, jobs chan<- net.Conn) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		} else if err != nil { // e.g., EMFILE: the post exits; we back off, 5ms doubling to 1s, as net/http does
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			slog.Warn("accept", "err", err, "retry", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		jobs <- c // even as we stop: a client we accepted is served, or moved
	}
}

// A pool is the post's ThreadPool<TASK>, without the singleton: workers serve jobs
// until it is closed, and let go of what they serve once letGo is done.
type pool struct {
	jobs       chan net.Conn
	idle       time.Duration
	letGo      context.Context
	cutAt      time.Time     // when a Write in progress is cut
	to         *net.UnixConn // where connections move; nil at a stop
	moved, cut atomic.Int64
}

// worker serves connections one at a time, like one of the post's pool threads. Its
// buffer is reused: echo allocates nothing (in make bench, 16 KiB cost 50% more CPU).
func (p *pool) worker() {
	buf := make([]byte, 32<<10)
	for c := range p.jobs {
		wake := context.AfterFunc(p.letGo, func() {
			c.SetReadDeadline(time.Now()) // a Read returns at once; a Write goes on until cutAt
			c.SetWriteDeadline(p.cutAt)
		})
		err := echo(c, buf, p.idle, p.letGo)
		wake()
		if err == errLetGo && p.to != nil && send(p.to, c) == nil {
			p.moved.Add(1)
		} else if err != nil && p.letGo.Err() != nil {
			p.cut.Add(1) // e.g., its client stopped reading, or the new daemon is gone
		}
		c.Close() // after a move, the new daemon holds the socket
	}
}

var errLetGo = errors.New("let go at a safe point")

// echo sends back what c sends until c half-closes (RFC 862), or letGo is done. The
// deadline frees the worker of a stalled client; without it, N silent clients stop N workers.
func echo(c net.Conn, buf []byte, idle time.Duration, letGo context.Context) error {
	var moved time.Time
	for {
		// A deadline move costs 2.5% of a round trip: only every idle/8, so a stall is cut in idle..9/8 idle.
		if now := time.Now(); now.Sub(moved) >= idle/8 {
			c.SetDeadline(now.Add(idle + idle/8))
			moved = now
		}
		if letGo.Err() != nil { // the safe point: all we read is written back (after the deadline move, which may undo a wake-up)
			return errLetGo
		}
		nr, rerr := c.Read(buf)
		if nr > 0 {
			if _, err := c.Write(buf[:nr]); err != nil { // unlike write(2): all is written, or it fails
				return err // e.g., the client reset, or stopped reading for idle
			}
		}
		if rerr == io.EOF {
			return nil // the client's FIN: everything before it is echoed
		} else if rerr != nil && letGo.Err() == nil {
			return rerr // e.g., idle timeout; the post spins here forever
		}
	}
}

// send moves c: SCM_RIGHTS (unix(7)) gives the new daemon a descriptor for the same socket.
func send(to *net.UnixConn, c net.Conn) error {
	f, err := c.(*net.TCPConn).File() // a copy, made blocking: the new daemon's FileConn undoes that
	if err == nil {
		_, _, err = to.WriteMsgUnix([]byte{1}, syscall.UnixRights(int(f.Fd())), nil) // a byte: an empty message reads as EOF
		f.Close()
	}
	return err
}

// receive feeds jobs, as accept does, with what the old daemon moves to us, until EOF.
func receive(from *net.UnixConn, jobs chan<- net.Conn) {
	oob := make([]byte, syscall.CmsgSpace(4)) // SOCK_SEQPACKET: one descriptor a message
	for n := 0; ; {
		_, oobn, _, _, err := from.ReadMsgUnix(make([]byte, 1), oob) // with MSG_CMSG_CLOEXEC
		msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			if n > 0 { // none at a first start
				slog.Info("moved in", "conns", n)
			}
			return
		}
		fds, _ := syscall.ParseUnixRights(&msgs[0])
		for _, fd := range fds {
			f := os.NewFile(uintptr(fd), "moved")
			if c, err := net.FileConn(f); err == nil { // a copy of f
				jobs <- c
				n++
			}
			f.Close()
		}
	}
}

var notifyFailed sync.Once

// sdNotify tells the service manager our state (sd_notify(3)), if it listens.
func sdNotify(state string) {
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
		c, err := net.Dial("unixgram", addr) // Go reads a leading @ as the abstract namespace, as systemd does
		if err == nil {
			c.SetWriteDeadline(time.Now().Add(time.Second)) // a manager that does not read must not stop us
			_, err = c.Write([]byte(state))
			c.Close()
		}
		if err != nil {
			notifyFailed.Do(func() { slog.Warn("sd_notify", "err", err) })
		}
	}
}

// lockPID opens and flocks path. The lock passes to the daemon and dies with it.
func lockPID(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644) // no O_TRUNC: it may be another daemon's
	if fi, _ := f.Stat(); errors.Is(err, syscall.ELOOP) || err == nil && (fi == nil || !fi.Mode().IsRegular()) {
		err = fmt.Errorf("-pidfile %s: not a regular file (echod follows no symbolic link)", path)
	} else if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		who := "already running"
		if pid, _ := os.ReadFile(path); len(pid) > 0 { // empty while a daemon starts
			who += " as pid " + strings.TrimSpace(string(pid))
		}
		err = fmt.Errorf("%s (%s is locked)", who, path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if !isAt(f) {
		f.Close() // a stopping daemon removed it after we opened it: try again
		return lockPID(path)
	}
	return f, nil
}

func isAt(f *os.File) bool {
	fi, _ := f.Stat()
	at, _ := os.Stat(f.Name())
	return os.SameFile(fi, at) // false if either is gone
}

// writePID writes pid in place: the lock is on this inode, and no reader finds it empty.
func writePID(f *os.File, pid int) error {
	if f == nil {
		return nil
	}
	b := fmt.Appendln(nil, pid)
	_, err := f.WriteAt(b, 0)
	return cmp.Or(err, f.Truncate(int64(len(b)))) // a longer stale pid, 4194000, must not leave "0\n" behind
}

// openLog opens the daemon's log by path: after logrotate renamed it, a new file.
func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o644)
}

// removePID removes the PID file if it is still ours: after an rm, the path may be another daemon's.
func removePID(f *os.File) {
	if f != nil && isAt(f) {
		os.Remove(f.Name())
	}
}
