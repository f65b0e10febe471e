// Command echod is the post's thread-pool TCP echo server (RFC 862), run as a daemon.
package main

import (
	"bytes"
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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	addr       = flag.String("addr", "127.0.0.1:8080", "listen `address`; port 0 picks a free port")
	workers    = flag.Int("workers", 64, "size of the fixed pool (1 to 10000: each has a 32 KiB buffer)")
	queue      = flag.Int("queue", 64, "capacity of the channel of accepted connections (0 to 100000)")
	idle       = flag.Duration("idle", time.Minute, "close a connection when a read or write waits this long (1m, 30s)")
	grace      = flag.Duration("grace", 5*time.Second, "how long a stop lets connections finish; a reload waits for none")
	foreground = flag.Bool("foreground", false, "stay attached: no daemon, log to stderr, SIGHUP ends it")
	dir        = flag.String("dir", "/", "the daemon's working `directory`")
	logPath    = flag.String("log", "echod.log", "the daemon's log `file` (in -foreground, stderr is the log)")
	pidPath    = flag.String("pidfile", "echod.pid", "the daemon's PID `file`, locked while it runs")
)

func main() {
	flag.CommandLine.Init("echod", flag.ContinueOnError)
	flag.CommandLine.SetOutput(io.Discard) // a mistake is one line, below; -h, the whole usage
	if err := checkFlags(flag.CommandLine.Parse(os.Args[1:])); err == flag.ErrHelp {
		flag.CommandLine.SetOutput(os.Stdout)
		flag.Usage()
		return
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "echod: %v (echod -h lists the flags)\n", err)
		os.Exit(2)
	}
	signal.Ignore(syscall.SIGPIPE)                                 // see ①; in every process: `echod | true` exits 0
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil))) // in the daemon, the log file (see ④)
	if err := launch(); err != nil {
		fmt.Fprintln(os.Stderr, "echod:", err)
		os.Exit(1)
	}
}

// checkFlags says what is wrong with the flags, and what a right value looks like: -idle 5, say, lacks a unit.
func checkFlags(parseErr error) error {
	_, port, err := net.SplitHostPort(*addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port) // a number to 65535, or a name in /etc/services
	}
	msg := fmt.Sprint(parseErr)
	name, _, _ := strings.Cut(msg[strings.LastIndex(msg, " -")+2:], ":") // invalid value "5" for flag -idle: …
	switch f := flag.Lookup(name); {
	case f != nil && strings.HasPrefix(msg, "invalid"):
		kind, _ := flag.UnquoteUsage(f)
		return fmt.Errorf("%v; want -%s <%s>, such as -%[2]s=%[4]s", parseErr, name, cmp.Or(kind, "bool"), f.DefValue)
	case parseErr != nil:
		return parseErr
	case flag.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", flag.Arg(0))
	case err != nil:
		return fmt.Errorf("-addr: %v; want host:port, such as 127.0.0.1:8080", err)
	case *workers < 1 || *workers > 10000 || *queue < 0 || *queue > 100000:
		return errors.New("want -workers 1 to 10000, such as 64, and -queue 0 to 100000")
	case *idle <= 0 || *idle > 100000*time.Hour || *grace < 0: // idle + idle/8 must not overflow
		return errors.New("want -idle above 0 and at most 100000h, such as 1m, and -grace 0 or more, such as 5s")
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
		return run(ln, nil, pidf, nil)
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop() // while we wait for the daemon's word, a signal must leave no daemon behind
	next, word := startDaemon(ctx, ln, pidf, logf)
	if err = <-word; err == nil {
		next.Close() // no order, and nothing to move at a first start: the daemon reads EOF
		fmt.Printf("echod: daemon pid %d listening on %s (log %s)\n", next.pid, ln.Addr(), *logPath)
	}
	return err
}

// listen takes the socket the service manager passed (sd_listen_fds(3)), or binds address.
func listen(address string) (net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v) // for us alone
	}
	if pid != fmt.Sprint(os.Getpid()) {
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

// A link is the socket pair between two daemons, as nginx's channel: on it the new one says ready, and the old one
// sends its orders (`stop N`, `reload`) and moves its connections. The new one reads at once whatever comes, so an
// order waits for no move.
type link struct {
	pid int
	*net.UnixConn
}

// failed is the word of a new daemon that could not be started.
func failed(err error) <-chan error {
	word := make(chan error, 1)
	word <- err
	return word
}

// run serves ln until a stop, or a reload hands over (reload is nil in -foreground). It is echod's one loop, as
// tableflip's run(): signals, our successor's word and our predecessor's orders are events on channels; it alone
// owns the state, and a start in progress is a state it is in (started), not a call it waits in.
func run(ln net.Listener, from *link, pidf *os.File, reload func(context.Context) (*link, <-chan error)) error {
	sigs, hup, orders := make(chan os.Signal, 3), make(chan os.Signal, 1), make(chan int)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT) // for good: a second one cuts at once, cleanly
	if reload != nil {
		signal.Notify(hup, syscall.SIGHUP) // in -foreground, SIGHUP keeps its default, as a closed terminal's
	}
	p := &pool{jobs: make(chan job, *queue), idle: *idle}
	served := p.serve(ln, from, *workers, orders)       // before we say ready: ready means serving
	if err := writePID(pidf, os.Getpid()); err != nil { // only now may anyone signal us
		return err
	}
	sdNotify(fmt.Sprintf("READY=1\nMAINPID=%d", os.Getpid())) // MAINPID: a daemon is not what systemd started
	slog.Info("start", "addr", ln.Addr(), "workers", *workers, "pid", os.Getpid())
	if from != nil {
		if _, err := io.WriteString(from, readyMsg); err != nil { // e.g., our parent was killed: nobody knows
			removePID(pidf)
			return fmt.Errorf("telling our parent that we serve: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background()) // a start's, until we stop
	defer cancel()
	var (
		signaled, told int              // our own stop signals, and the most our predecessor passed on (stop N)
		stopped        int              // 1 gracefully, 2 at once; how hard we are asked: the larger of the two above
		next           *link            // our successor: starting while started is not nil, then handed over to
		started        <-chan error     // its word: nil once it serves
		timer          <-chan time.Time // -grace's end at a stop; after the last move, the end of a linger
		began          time.Time        // the handover's
		passed         sync.WaitGroup   // orders on their way to next
		flushed        chan os.Signal   // at the linger's end, our own marker signal: what was sent before it is in
	)
	for {
		waitHUP := hup
		if started != nil || stopped > 0 {
			waitHUP = nil // one waits during a start (several are one); during a stop, none is taken
		}
		select {
		case <-sigs:
			signaled++
		case n := <-orders: // a stop passed on says how hard: under KillMode=control-group, we had one too
			if told = max(told, n); n == 0 { // reload, as a SIGHUP, coalescing with them
				select {
				case hup <- syscall.SIGHUP:
				default:
				}
				continue
			}
		case <-waitHUP:
			if next != nil { // handing over: next runs the binary at the path now, and opens -log anew
				to := next
				passed.Go(func() { io.WriteString(to, "reload") }) // orders may pass each other: each stands alone
			} else {
				next, started = reload(ctx)
			}
			continue
		case err := <-started:
			if started = nil; err == nil && stopped == 0 {
				began = time.Now()
				p.stop(ln, next.UnixConn)
				continue
			} else if err == nil { // it said ready as a stop came: it goes, and we stop
				syscall.Kill(-next.pid, syscall.SIGKILL)
			}
			next = nil
			writePID(pidf, os.Getpid())                               // it may have written its own
			sdNotify(fmt.Sprintf("READY=1\nMAINPID=%d", os.Getpid())) // RELOADING=1 ends in READY=1, even at a stop
			if stopped == 0 {
				slog.Error("reload failed; serving on", "err", err)
			}
			continue
		case <-timer:
			if next == nil || started != nil { // -grace is over, even if a start our stop ended has not yet
				p.release()
			} else { // a signal sent to us may not be in sigs yet (a loaded machine): Go's runtime hands signals
				// over in the order they came (lowest first if together), so once a SIGWINCH sent now is in, it is
				flushed = make(chan os.Signal, 1)
				signal.Notify(flushed, syscall.SIGWINCH)
				syscall.Kill(os.Getpid(), syscall.SIGWINCH)
			}
			continue
		case <-flushed:
			if signal.Stop(flushed); len(sigs) > 0 {
				flushed, timer = nil, time.After(time.Millisecond) // it is passed on first, then we flush again
				continue
			}
			passed.Wait() // what we passed on has gone
			return nil    // the PID file is next's
		case <-served:
			if started != nil && <-started == nil { // a start our stop ended: it is gone once started says so
				syscall.Kill(-next.pid, syscall.SIGKILL)
			} else if next != nil && started == nil { // a signal on its way to us is passed on too, for a moment
				served, timer = nil, time.After(50*time.Millisecond)
				slog.Info("stop", "handed_over_to", next.pid, "moved", p.moved.Load(), "cut", p.cut.Load(),
					"took", time.Since(began).Round(time.Microsecond).String())
				continue
			}
			removePID(pidf)
			slog.Info("stop", "cut", p.cut.Load())
			return nil
		}
		// A stop: a signal, or one passed on.
		stops := max(signaled, told)
		if next != nil && started == nil {
			to, n := next, stops
			passed.Go(func() { fmt.Fprintf(to, "stop %d", n) }) // whoever signalled us meant next: a message, no signal
			continue
		}
		if stops > 0 && stopped == 0 {
			cancel() // and with it a start in progress: started says when it is gone
			stopped, timer = 1, time.After(*grace)
			slog.Info("stopping", "open", p.open.Load(), "grace", *grace, "then", "a second SIGTERM or Ctrl-C cuts them")
			sdNotify("STOPPING=1")
			p.stop(ln, nil)
		}
		if stops > 1 && stopped == 1 {
			stopped = 2
			slog.Info("stopping at once", "open", p.open.Load())
			p.release()
			if from != nil {
				from.Close() // and take nothing more: our predecessor cuts what it still holds
			}
		}
	}
}

// A pool is the post's ThreadPool<TASK>, without the singleton: workers serve the jobs accept and receive queue.
type pool struct {
	jobs, moving     chan job
	idle             time.Duration
	letGo            context.Context
	release          context.CancelFunc
	to               *net.UnixConn // where connections move; nil at a stop
	open, moved, cut atomic.Int64
}

type job struct {
	net.Conn // nil until a worker takes a moved one: it has only fd (FileConn costs 30µs, most of a move)
	fd       int
	silent   time.Duration // how long its client had been silent when it was last let go: its -idle moves with it
	unsent   []byte        // what a Write had not sent when it moved: the next daemon sends it first
}

// serve starts the workers and feeds them from ln and from; served closes once all is served, moved or cut.
func (p *pool) serve(ln net.Listener, from *link, workers int, orders chan<- int) <-chan struct{} {
	p.letGo, p.release = context.WithCancel(context.Background())
	p.moving = make(chan job, workers)
	var busy, feeding sync.WaitGroup
	for range workers {
		busy.Go(p.worker)
	}
	feeding.Go(func() { p.accept(ln) }) // at once, as our predecessor moves: new clients do not wait for it
	if from != nil {
		feeding.Go(func() { p.receive(from, orders) })
	}
	go func() { feeding.Wait(); close(p.jobs) }()
	served := make(chan struct{})
	go func() {
		busy.Wait()
		close(p.moving)
		for j := range p.moving { // those in service, then the queue, in order, from one goroutine
			p.end(&j, errLetGo)
		}
		for j := range p.jobs {
			p.end(&j, errLetGo)
		}
		close(served)
	}()
	return served
}

// stop stops accepting. With to nil, the loop lets go after -grace, and the rest are cut (net/http's Shutdown).
// With a pair to a new daemon, it lets go at once: each connection moves, in service first, then the queue, in order.
func (p *pool) stop(ln net.Listener, to *net.UnixConn) {
	ln.Close() // new clients are refused, or, at a reload, wait in the backlog for the new daemon
	if p.to = to; to != nil {
		to.SetWriteDeadline(time.Now().Add(10 * time.Second)) // the pair's own bound, for a new daemon that stops reading
		p.release()
	}
}

// accept queues each new connection until ln is closed. Once jobs is full, clients wait in the backlog: no loss.
func (p *pool) accept(ln net.Listener) {
	for delay := time.Duration(0); ; {
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
		p.open.Add(1)
		p.jobs <- job{Conn: c} // even as we stop: a client we accepted is served, or moved
	}
}

// worker serves a connection at a time, like a pool thread of the post's, with one buffer (16 KiB cost 50% more CPU).
func (p *pool) worker() {
	buf := make([]byte, 32<<10)
	for j := range p.jobs {
		if err := p.echo(&j, buf); err == errLetGo && p.to != nil {
			p.moving <- j
		} else {
			p.end(&j, err)
		}
		if p.letGo.Err() != nil {
			return // what is queued is serve's now, to keep its order
		}
	}
}

// end lets go of a connection: it moves, at a reload, or is closed.
func (p *pool) end(j *job, err error) {
	if err == errLetGo && p.to != nil && send(p.to, j) == nil {
		p.moved.Add(1)
	} else if err != nil && p.letGo.Err() != nil {
		p.cut.Add(1) // e.g., its client stopped reading, or the new daemon is gone
	}
	if j.Conn != nil {
		j.Close() // after a move, the new daemon holds the socket
	} else {
		syscall.Close(j.fd)
	}
	p.open.Add(-1)
}

var errLetGo = errors.New("let go at a safe point")

// echo sends back what j sends until it half-closes (RFC 862) or the pool lets go; -idle frees it of a silent client.
func (p *pool) echo(j *job, buf []byte) error {
	if j.Conn == nil {
		if err := j.adopt(); err != nil {
			return err // its client sees EOF
		}
	}
	heard, err := time.Now().Add(-j.silent), error(nil) // -idle counts its client's silence, never its wait
	j.SetDeadline(heard.Add(p.idle + p.idle/8))
	// When the pool lets go, a Read or a Write returns at once: after the deadline above, which would undo it.
	defer context.AfterFunc(p.letGo, func() { j.SetDeadline(time.Now()) })()
	if unsent := j.unsent; len(unsent) > 0 {
		j.unsent = nil // write sets it again if this one moves on
		err = p.write(j, unsent)
	}
	for err == nil && p.letGo.Err() == nil { // the safe point
		nr, rerr := j.Read(buf)
		if nr > 0 {
			// A deadline move costs 2.5% of a round trip: only every idle/8, so a stall is cut in idle..9/8 idle.
			if now := time.Now(); now.Sub(heard) >= p.idle/8 {
				j.SetDeadline(now.Add(p.idle + p.idle/8))
				heard = now
				if p.letGo.Err() != nil { // let go meanwhile: its deadline, which this move undid
					j.SetDeadline(now)
				}
			}
			err = p.write(j, buf[:nr])
		}
		if rerr == io.EOF {
			return err // the client's FIN: everything before it is echoed
		} else if rerr != nil && p.letGo.Err() == nil {
			return cmp.Or(err, rerr) // e.g., idle timeout; the post spins here forever
		}
	}
	j.silent = time.Since(heard)
	return cmp.Or(err, errLetGo)
}

// write sends b back whole (unlike write(2)), or fails: e.g., its client reset, or stopped reading for -idle.
// At a reload, what it has not sent when the pool lets go moves with j, so that no client is cut for reading slowly.
func (p *pool) write(j *job, b []byte) error {
	n, err := j.Write(b)
	if err != nil && p.letGo.Err() != nil && p.to != nil {
		j.unsent = bytes.Clone(b[n:])
		return errLetGo
	}
	return err
}

// send moves j (传递文件描述符): SCM_RIGHTS (unix(7)) gives the new daemon a descriptor for the same socket.
func send(to *net.UnixConn, j *job) error {
	if j.Conn != nil { // its descriptor stays ours until end closes it; not File(), which would make it blocking
		sc, _ := j.Conn.(*net.TCPConn).SyscallConn()
		sc.Control(func(fd uintptr) { j.fd = int(fd) })
	}
	msg := fmt.Appendf(nil, "move %d\n%s", j.silent.Microseconds(), j.unsent)
	_, _, err := to.WriteMsgUnix(msg, syscall.UnixRights(j.fd), nil)
	return err
}

// receive queues what our predecessor moves, in order. take never waits for a worker, nor an order behind a move:
// what our queue cannot take yet waits in taken, however many reloads in a row brought them.
func (p *pool) receive(from *link, orders chan<- int) {
	in := make(chan job, 64) // a buffer, so that take and this loop seldom wait on each other
	go p.take(from, in, orders)
	var taken []job
	for in != nil || len(taken) > 0 {
		jobs, first := chan job(nil), job{}
		if len(taken) > 0 {
			jobs, first = p.jobs, taken[0]
		}
		select {
		case j, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			taken = append(taken, j)
		case jobs <- first:
			taken = taken[1:]
		}
	}
}

func (p *pool) take(from *link, in chan<- job, orders chan<- int) {
	defer close(in)
	msg, oob := make([]byte, 40<<10), make([]byte, syscall.CmsgSpace(4)) // SOCK_SEQPACKET: one descriptor a message
	took, lost := 0, 0
	for {
		n, oobn, _, _, err := from.ReadMsgUnix(msg, oob) // with MSG_CMSG_CLOEXEC
		if err != nil || n == 0 {
			break
		}
		what, num := "", int64(0)
		fmt.Sscan(string(msg[:n]), &what, &num)
		msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
		if _, unsent, _ := bytes.Cut(msg[:n], []byte("\n")); what == "stop" || what == "reload" {
			orders <- int(num) // 0: reload
		} else if len(msgs) != 1 { // past our descriptor limit, the kernel dropped it (MSG_CTRUNC)
			lost++
		} else if fds, err := syscall.ParseUnixRights(&msgs[0]); err == nil {
			took++
			p.open.Add(1)
			in <- job{fd: fds[0], silent: time.Duration(num) * time.Microsecond, unsent: bytes.Clone(unsent)}
		}
	}
	if took > 0 { // none at a first start
		slog.Info("moved in", "conns", took)
	}
	if lost > 0 {
		slog.Warn("could not take moved connections; their clients see EOF", "conns", lost, "err", "out of descriptors")
	}
}

// adopt makes a moved connection's descriptor a net.Conn, or closes it: FileConn needs a copy, which at our
// descriptor limit fails (EMFILE).
func (j *job) adopt() error {
	f := os.NewFile(uintptr(j.fd), "moved")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		j.fd = -1 // closed with f
		slog.Warn("could not take a moved connection; its client sees EOF", "err", err)
	}
	j.Conn = c
	return err
}

var notifyFailed sync.Once

// sdNotify tells the service manager our state (sd_notify(3)), if it listens: at once or not at all, without
// waiting on a manager that does not read, which must never hold up the loop.
func sdNotify(state string) {
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
		if err == nil { // MSG_DONTWAIT: a full queue is EAGAIN; @ in addr: abstract, as systemd's
			err = syscall.Sendto(fd, []byte(state), syscall.MSG_DONTWAIT, &syscall.SockaddrUnix{Name: addr})
			syscall.Close(fd)
		}
		if err != nil {
			notifyFailed.Do(func() { slog.Warn("sd_notify", "err", err) })
		}
	}
}

// lockPID opens and flocks path. The lock passes to the daemon and dies with it.
func lockPID(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644) // no O_TRUNC: it may be another daemon's
	if errors.Is(err, syscall.ELOOP) {
		err = fmt.Errorf("-pidfile %s: a symbolic link, which echod does not follow: name the file itself", path)
	} else if fi, _ := f.Stat(); err == nil && (fi == nil || !fi.Mode().IsRegular()) {
		err = fmt.Errorf("-pidfile %s: not a regular file; want a file's path, such as /run/echod.pid", path)
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
	if err == nil && isAt(f) {
		return f, nil
	}
	f.Close()
	if err != nil {
		return nil, err
	}
	return lockPID(path) // a stopping daemon removed it after we opened it: try again
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
	if _, err := f.WriteAt(b, 0); err != nil {
		return err // not Truncate, which past a failed write would fill the file with NULs
	}
	return f.Truncate(int64(len(b))) // a longer stale pid, 4194000, must not leave "0\n" behind
}

// openLog opens the daemon's log by path: after logrotate renamed it, a new file. A FIFO nobody reads fails at once
// (ENXIO), where open(2) would wait for a reader; then it is made blocking, as stderr is written: a poller's
// registration would not follow it onto fd 2.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if err == nil {
		if err = syscall.SetNonblock(int(f.Fd()), false); err != nil {
			f.Close()
		}
	}
	return f, err
}

// removePID removes the PID file if it is still ours: after an rm, the path may be another daemon's.
func removePID(f *os.File) {
	if f != nil && isAt(f) {
		os.Remove(f.Name())
	}
}
