package main

import (
	"bytes"
	"echod/internal/echotest"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The tests of 传递文件描述符: at a reload, open connections move to the new
// daemon over a socket pair (SCM_RIGHTS), and their clients do not notice.

// roundTrip writes data on c and reads it back, checking every byte.
func roundTrip(c net.Conn, data []byte) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	werr := make(chan error, 1)
	go func() { _, err := c.Write(data); werr <- err }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("%w at byte %d", errCorrupt, echotest.FirstDiff(got, data))
	}
	return <-werr
}

// TestMovePersistent keeps 16 connections doing random round trips, each
// checked, across 5 reloads: none fails, and at the end the same client
// sockets make round trips with the last daemon, the only one left. Every
// daemon's log says how many it moved and took.
func TestMovePersistent(t *testing.T) {
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir)
	conns := make([]*net.TCPConn, 16)
	for i := range conns {
		conns[i] = echotest.Dial(t, addr)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	trips, failed := 0, []error{}
	for _, c := range conns {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := roundTrip(c, echotest.Random(1+mrand.IntN(8<<10)))
				mu.Lock()
				trips++
				if err != nil {
					failed = append(failed, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	for range 5 {
		time.Sleep(100 * time.Millisecond) // a moment of traffic between reloads
		pid = reloadOnce(t, dir, pid)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d round trips across 5 reloads, %d failed", trips, len(failed))
	if len(failed) > 0 {
		t.Fatalf("%d connections failed; first: %v", len(failed), failed[0])
	}
	assertOnly(t, dir, pid, addr)
	for _, c := range conns {
		if err := roundTrip(c, []byte("still here, with the last daemon")); err != nil {
			t.Fatal(err)
		}
	}
	log := awaitLog(t, dir, "msg=stop handed_over_to")
	if n := strings.Count(log, "moved=16 cut=0"); n != 5 {
		t.Errorf("%d handovers moved 16 and cut none, want 5:\n%s", n, log)
	}
	if n := strings.Count(log, `msg="moved in" conns=16`); n != 5 {
		t.Errorf("%d daemons took 16, want 5:\n%s", n, log)
	}
}

// TestMoveStream writes 8 MiB at a steady pace across 2 reloads while it
// reads the echo: every byte comes back, in order.
func TestMoveStream(t *testing.T) {
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir)
	c := echotest.Dial(t, addr)
	done := make(chan error, 1)
	go func() { // 64 KiB every 10ms: about 1.3s
		done <- verify(c, echotest.Random(8<<20), func() int { time.Sleep(10 * time.Millisecond); return 64 << 10 }, 32<<10, 0)
	}()
	for range 2 {
		time.Sleep(300 * time.Millisecond)
		pid = reloadOnce(t, dir, pid)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if log := awaitLog(t, dir, "msg=stop"); strings.Count(log, "moved=1 ") != 2 {
		t.Errorf("the stream did not move at both reloads:\n%s", log)
	}
}

// TestMoveInteractive types a line into nc, reloads, types another on the
// same connection and ends the input: nc -N half-closes, both lines come
// back, then the server's EOF ends nc.
func TestMoveInteractive(t *testing.T) {
	echotest.NeedTool(t, "nc", "netcat-openbsd")
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("nc", "-N", host, port)
	in, lines, expect := talk(t, cmd)
	io.WriteString(in, "before the reload\n")
	expect("before the reload")
	reloadOnce(t, dir, pid)
	io.WriteString(in, "after the reload\n")
	expect("after the reload")
	in.Close()
	if _, open := <-lines; open {
		t.Error("more output after the last line")
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("nc: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("nc did not end: no EOF from the server")
	}
}

// TestMoveNonReader sends 16 MiB on one connection and never reads: the
// only worker blocks in a Write, with a second client queued. A reload waits
// for no Write and cuts no one: what the Write had not sent moves with the
// connection, so the old daemon is gone at once, far within -grace. Once the
// client reads, all its 16 MiB come back, and then the queued client is
// served, as one worker would have served them without the reload.
func TestMoveNonReader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir, "-grace", "20s", "-workers", "1")
	stuck := echotest.Dial(t, addr)
	data := echotest.Random(16 << 20)
	werr := make(chan error, 1)
	go func() { _, err := stuck.Write(data); stuck.CloseWrite(); werr <- err }()
	awaitStuck(t, stuck)
	queued := echotest.Dial(t, addr)
	queued.Write([]byte("queued"))
	begin := time.Now()
	syscall.Kill(pid, syscall.SIGHUP)
	next := awaitReload(t, dir, pid)
	echotest.WaitGone(t, pid)
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the old daemon took %v to go, with -grace 20s", d)
	}
	if log := awaitLog(t, dir, "msg=stop"); !strings.Contains(log, fmt.Sprintf("handed_over_to=%d moved=2 cut=0", next)) {
		t.Errorf("want both moved, none cut:\n%s", log)
	}
	got := make([]byte, len(data))
	stuck.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(stuck, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the client that did not read: %v; all its bytes back: %v", err, bytes.Equal(got, data))
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	got = got[:len("queued")]
	queued.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(queued, got); err != nil || string(got) != "queued" {
		t.Fatalf("the queued client got %q, %v", got, err)
	}
}

// awaitStuck waits until the worker that serves c, a client that does not
// read, is stuck in a Write: each side's window is shut, and for half a second
// not a byte has moved either way, so the worker neither writes nor reads. It
// asks the kernel about c alone (TCP_INFO), never about the machine's other
// sockets. (The kernel may still make room for a little more after a moment,
// by compacting the client's receive queue: hence the half second.)
func awaitStuck(t *testing.T, c *net.TCPConn) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var last [2]uint64
	since := time.Now()
	echotest.Poll(t, 10*time.Second, "the worker never got stuck in a Write", func() bool {
		info := tcpInfo(t, raw)
		moved := [2]uint64{binary.NativeEndian.Uint64(info[120:]), binary.NativeEndian.Uint64(info[128:])} // tcpi_bytes_acked, tcpi_bytes_received
		shut := moved[1] > 0
		if len(info) >= 232 { // tcpi_snd_wnd (Linux 5.4): the daemon takes nothing more, so it does not read
			shut = shut && binary.NativeEndian.Uint32(info[228:]) == 0
		}
		if len(info) >= 236 { // tcpi_rcv_wnd (Linux 6.2): we take nothing more, so its Write cannot finish
			shut = shut && binary.NativeEndian.Uint32(info[232:]) == 0
		}
		if !shut || moved != last {
			last, since = moved, time.Now()
		}
		return shut && time.Since(since) >= 500*time.Millisecond
	})
}

// tcpInfo returns the kernel's struct tcp_info for the socket, as long as
// this kernel's is.
func tcpInfo(t *testing.T, raw syscall.RawConn) []byte {
	t.Helper()
	b := make([]byte, 512)
	n := uint32(len(b))
	var errno syscall.Errno
	raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO, uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&n)), 0)
	})
	if errno != 0 || n < 136 { // up to tcpi_bytes_received (Linux 4.1)
		t.Fatalf("TCP_INFO: %d bytes, %v", n, errno)
	}
	return b[:n]
}

// awaitMovedIn waits until the new daemon pid holds n connections that the
// old one moved to it: sockets beside the two it starts with, its listener
// and its socket pair (/proc/PID/fd). A move begins only once the old daemon
// has the new one's word.
func awaitMovedIn(t *testing.T, pid, n int) {
	t.Helper()
	echotest.Poll(t, 10*time.Second, fmt.Sprintf("pid %d did not take %d connections", pid, n), func() bool {
		return sockets(pid) >= 2+n
	})
}

// sockets counts the sockets that pid holds, by its own /proc/PID/fd.
func sockets(pid int) int {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	n := 0
	for _, fd := range fds {
		if link, _ := os.Readlink(fd); strings.HasPrefix(link, "socket:") {
			n++
		}
	}
	return n
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// heldAndQueued starts a daemon in dir with one worker, which a client holds
// after a round trip, and three clients that each send "a" and wait in the
// pool's channel, accepted in this order but not served.
func heldAndQueued(t *testing.T, dir string) (pid int, addr string, held *net.TCPConn, queued []*net.TCPConn) {
	t.Helper()
	pid, addr = launchDaemon(t, dir, "-workers", "1")
	held = echotest.Dial(t, addr)
	if err := roundTrip(held, []byte("h")); err != nil {
		t.Fatal(err)
	}
	rest := fdCount(pid)
	for i := range 3 {
		queued = append(queued, echotest.Dial(t, addr))
		queued[i].Write([]byte("a"))
		echotest.Poll(t, 5*time.Second, "not accepted", func() bool { return fdCount(pid) == rest+i+1 })
	}
	return pid, addr, held, queued
}

// TestMoveQueued runs one worker: a held connection takes it, and three
// clients that send "a" wait in the pool's channel, accepted but not
// served. After a reload each sends "b" and half-closes; once the held one
// ends, each gets "ab" from the new daemon.
func TestMoveQueued(t *testing.T) {
	dir := t.TempDir()
	pid, addr, held, queued := heldAndQueued(t, dir)
	pid = reloadOnce(t, dir, pid)
	for _, c := range queued {
		c.Write([]byte("b"))
		c.CloseWrite()
	}
	held.CloseWrite()
	if b, err := io.ReadAll(held); err != nil || len(b) > 0 {
		t.Fatalf("the held connection: %q, %v; want EOF", b, err)
	}
	for i, c := range queued {
		if b, err := io.ReadAll(c); err != nil || string(b) != "ab" {
			t.Errorf("queued client %d got %q, %v; want \"ab\"", i, b, err)
		}
	}
	assertOnly(t, dir, pid, addr)
}

// TestMoveFailedReload keeps connections open across a reload that fails
// (a binary that exits 3): nothing moves, and they go on with the old daemon.
func TestMoveFailedReload(t *testing.T) {
	dir := t.TempDir()
	pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755))
	conns := []*net.TCPConn{echotest.Dial(t, addr), echotest.Dial(t, addr)}
	installScript(t, dir, "#!/bin/sh\nexit 3\n")
	syscall.Kill(pid, syscall.SIGHUP)
	awaitLog(t, dir, "reload failed")
	for _, c := range conns {
		if err := roundTrip(c, []byte("still with the old daemon")); err != nil {
			t.Fatal(err)
		}
	}
	assertOnly(t, dir, pid, addr)
}

// TestMoveLeaksNoDescriptor reloads 20 times with 16 connections open:
// each new daemon holds as many descriptors as the first daemon did, one for
// each connection it took, and no more.
func TestMoveLeaksNoDescriptor(t *testing.T) {
	t.Parallel() // it mostly waits
	dir := t.TempDir()
	pid, addr := launchDaemon(t, dir)
	for range 16 {
		c := echotest.Dial(t, addr)
		if err := roundTrip(c, []byte("open")); err != nil {
			t.Fatal(err)
		}
	}
	first := fdCount(pid)
	for range 20 {
		pid = reloadOnce(t, dir, pid)
	}
	echotest.Poll(t, 5*time.Second, "the last daemon did not take all 16", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "echod.log"))
		return bytes.Count(b, []byte(`msg="moved in" conns=16`)) == 20
	})
	if n := fdCount(pid); n != first {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		t.Errorf("%d descriptors after 20 reloads, %d before: %v", n, first, fds)
	}
}

// TestMoveChain reloads twice while a connection is stuck in a Write to a
// client that does not read: A moves it to B at once, with what its Write
// had not sent, and B moves it on to C. When the client reads again, its
// 16 MiB all come back, and only C is left.
func TestMoveChain(t *testing.T) {
	dir := t.TempDir()
	a, addr := launchDaemon(t, dir)
	c := echotest.Dial(t, addr)
	data := echotest.Random(16 << 20)
	werr := make(chan error, 1)
	go func() { _, err := c.Write(data); werr <- err }()
	awaitStuck(t, c)
	syscall.Kill(a, syscall.SIGHUP)
	b := awaitReload(t, dir, a)
	syscall.Kill(b, syscall.SIGHUP)
	last := awaitReload(t, dir, b)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %v; equal: %v", err, bytes.Equal(got, data))
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	echotest.WaitGone(t, a)
	echotest.WaitGone(t, b)
	assertOnly(t, dir, last, addr)
	if err := roundTrip(c, []byte("served by C")); err != nil {
		t.Fatal(err)
	}
}

const deadEndEnv = "ECHOD_TEST_DEAD_END"

func init() {
	standIn = func() bool {
		if os.Getenv(deadEndEnv) == "" || !isDaemon() {
			return false
		}
		deadEnd()
		return true
	}
}

// deadEnd is a new daemon that writes its pid and says `ready` (unless
// "silent") as echod does, but takes no connection: it shuts its end of the socket pair, as
// one that died would, or it never reads, as one that hangs would. It waits
// to be killed.
func deadEnd() {
	if os.Getenv(deadEndEnv) == "closed" {
		syscall.Shutdown(pairFD, syscall.SHUT_RD)
	}
	writePID(os.NewFile(pidFD, "pid"), os.Getpid())
	if os.Getenv(deadEndEnv) != "silent" {
		syscall.Write(pairFD, []byte(readyMsg))
	}
	time.Sleep(time.Minute)
}

// TestMoveToDeadEnd reloads into a new daemon that takes no connection. If
// its end is closed, the old daemon cannot send, so it cuts all it holds at
// once. If it never reads, the socket pair takes a few hundred (its buffer)
// and then blocks: the old daemon cuts the rest once the pair's own bound
// (-grace, then 10s) has passed. Either way it says so, and goes.
func TestMoveToDeadEnd(t *testing.T) {
	for _, end := range []string{"closed", "hung"} {
		t.Run(end, func(t *testing.T) {
			t.Parallel() // the hung one waits out the socket pair's bound
			dir := t.TempDir()
			pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755), "-grace", "1s", "-workers", "600")
			conns := make([]*net.TCPConn, 600)
			for i := range conns {
				if conns[i] = echotest.Dial(t, addr); roundTrip(conns[i], []byte("open")) != nil {
					t.Fatal("no echo")
				}
			}
			test, _ := os.Executable() // it runs as the new daemon
			installScript(t, dir, fmt.Sprintf("#!/bin/sh\n%s=%s exec %s \"$@\"\n", deadEndEnv, end, test))
			syscall.Kill(pid, syscall.SIGHUP)
			next := awaitReload(t, dir, pid)
			begin, bound := time.Now(), 3*time.Second
			if end == "hung" {
				bound += 10 * time.Second // -grace, then the pair's own bound
			}
			echotest.Poll(t, bound+5*time.Second, "the old daemon did not go", func() bool { return !echotest.Alive(pid) })
			if d := time.Since(begin); d > bound {
				t.Errorf("the old daemon took %v to go", d)
			}
			var moved, cut int
			log := awaitLog(t, dir, "msg=stop")
			fmt.Sscanf(log[strings.Index(log, "handed_over_to="):], fmt.Sprintf("handed_over_to=%d moved=%%d cut=%%d", next), &moved, &cut)
			if moved+cut != 600 || cut == 0 || end == "closed" && moved > 0 || end == "hung" && moved == 0 {
				t.Errorf("moved %d, cut %d:\n%s", moved, cut, log)
			}
		})
	}
}

var reloadCost = flag.Bool("reloadcost", false, "run TestReloadCost, which measures round trips across reloads")

// TestReloadCost measures what reloads cost 16 persistent connections
// doing 64-byte round trips: p50 and p99 over 5s without a reload, and over
// 5s with 10 reloads, from a daemon without the race detector. Run it with
// go test -run TestReloadCost -v -reloadcost.
func TestReloadCost(t *testing.T) {
	if !*reloadCost {
		t.Skip("-reloadcost not given")
	}
	dir := t.TempDir()
	pid, addr := echotest.StartDaemon(t, dir, installEchod(t, dir, plainBin, 0o755))
	conns := make([]*net.TCPConn, 16)
	for i := range conns {
		conns[i] = echotest.Dial(t, addr)
	}
	measure := func(reloads int) (p50, p99 time.Duration, errs int) {
		var mu sync.Mutex
		var took []time.Duration
		var wg sync.WaitGroup
		end := time.Now().Add(5 * time.Second)
		for _, c := range conns {
			wg.Go(func() {
				msg := echotest.Random(64)
				for time.Now().Before(end) {
					begin := time.Now()
					err := roundTrip(c, msg)
					mu.Lock()
					took = append(took, time.Since(begin))
					if err != nil {
						errs++
					}
					mu.Unlock()
				}
			})
		}
		for range reloads {
			time.Sleep(5 * time.Second / time.Duration(reloads+1))
			pid = reloadOnce(t, dir, pid)
		}
		wg.Wait()
		slices.Sort(took)
		return took[len(took)/2], took[len(took)*99/100], errs
	}
	s50, s99, serr := measure(0)
	r50, r99, rerr := measure(10)
	t.Logf("steady:      p50 %v, p99 %v, %d errors", s50, s99, serr)
	t.Logf("10 reloads:  p50 %v, p99 %v, %d errors; p99 ratio %.2f", r50, r99, rerr, float64(r99)/float64(s99))
	if serr+rerr > 0 {
		t.Errorf("%d round trips failed", serr+rerr)
	}
}
