package main

import (
	"bytes"
	"cmp"
	"echod/internal/echotest"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var soakFor = flag.Duration("soak", 5*time.Second, "how long TestSoak runs")

func fdCount(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

// vmHWM is pid's peak resident memory, in KiB.
func vmHWM(t testing.TB, pid int) int {
	t.Helper()
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return kb
		}
	}
	t.Fatalf("no VmHWM for pid %d", pid)
	return 0
}

// backToRest waits until pid holds no more descriptors than it did at rest.
func backToRest(t testing.TB, pid, rest int) {
	t.Helper()
	echotest.Poll(t, 10*time.Second, fmt.Sprintf("descriptors not back to %d", rest), func() bool { return fdCount(pid) <= rest })
}

// startPlain runs echod -foreground without the race detector, whose memory
// and CPU would swamp what is measured, under the command prefix pre.
func startPlain(t testing.TB, pre []string, args ...string) *echotest.Proc {
	t.Helper()
	args = append(append(pre, plainBin, "-foreground", "-addr", "127.0.0.1:0"), args...)
	s := echotest.Start(t, exec.Command(args[0], args[1:]...))
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.Cmd.Process.Pid)); string(comm) != "echod\n" {
		t.Fatalf("pid %d is %q, not echod", s.Cmd.Process.Pid, comm)
	}
	return s
}

// TestOutOfDescriptors runs echod with 24 descriptors and 60 clients. The
// post exits on the first EMFILE; echod must back off without spinning or
// flooding its log, and serve again once the clients leave.
func TestOutOfDescriptors(t *testing.T) {
	t.Parallel() // it waits: it measures the server's own CPU time, which others' load leaves alone
	echotest.NeedTool(t, "prlimit", "util-linux")
	echotest.OutOfDescriptors(t, startPlain(t, []string{"prlimit", "--nofile=24:24"}, "-workers", "16"))
}

// TestFlood connects 3000 clients at once to 16 workers: memory stays flat,
// every client is echoed, and the descriptors go back to rest.
func TestFlood(t *testing.T) {
	s := startPlain(t, nil, "-workers", "16")
	pid := s.Cmd.Process.Pid
	rest, restHWM := fdCount(pid), vmHWM(t, pid)
	conns := make([]net.Conn, 3000)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range conns {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", s.Addr, 30*time.Second)
			if err != nil {
				failed.Add(1)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			b := []byte{'x'}
			if _, err := c.Write(b); err != nil {
				failed.Add(1)
			} else if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	peak := vmHWM(t, pid)
	t.Logf("flood: VmHWM %d KiB at rest, %d KiB after 3000 clients", restHWM, peak)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 3000 clients not echoed", n)
	}
	if peak-restHWM > 8<<10 {
		t.Errorf("peak memory grew by %d KiB", peak-restHWM)
	}
	backToRest(t, pid, rest)
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("still echoing"))
}

// TestResetsAndGarbage sends random bytes and resets, or connects and
// closes, while one client streams: that client is not disturbed, and
// nothing is left behind.
func TestResetsAndGarbage(t *testing.T) {
	s := startServer(t, "-workers", "4")
	pid := s.Cmd.Process.Pid
	rest := fdCount(pid)
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", s.Addr, 10*time.Second)
			if err != nil {
				return // e.g., backlog full for a moment; the good client is what is checked
			}
			if i%2 == 0 {
				c.Write(echotest.Random(1 + i*100))
				c.(*net.TCPConn).SetLinger(0) // close with RST
			}
			c.Close()
		})
	}
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), echotest.Random(4<<20))
	wg.Wait()
	backToRest(t, pid, rest)
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("still echoing"))
}

// TestIdleCostsNothing watches a resting daemon's CPU time.
func TestIdleCostsNothing(t *testing.T) {
	t.Parallel() // it waits: it measures the server's own CPU time, which others' load leaves alone
	s := startPlain(t, nil)
	pid := s.Cmd.Process.Pid
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("warm up"))
	before := echotest.CPUTime(t, pid)
	time.Sleep(3 * time.Second) // a window to measure
	used := echotest.CPUTime(t, pid) - before
	t.Logf("at rest: %v of CPU in 3 s", used)
	if used > 20*time.Millisecond {
		t.Errorf("%v of CPU in 3 s at rest", used)
	}
}

// inProcess is the address of an echod serve running in this process,
// started once per process (and per fuzzing worker).
var inProcess = sync.OnceValue(func() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	(&pool{jobs: make(chan job, 4), idle: 10 * time.Second}).serve(ln, nil, 4, nil) // it serves until the tests end
	return ln.Addr().String()
})

// FuzzEcho writes any payload, cut into chunks of the sizes given, through
// the server, and expects it back byte for byte.
func FuzzEcho(f *testing.F) {
	f.Add([]byte("hello\n"), []byte{})
	f.Add([]byte{0, 0, 0, 255, '\n', 0}, []byte{0, 1})
	f.Add(bytes.Repeat([]byte("echod"), 50000), []byte{200, 3, 255, 0})
	f.Add([]byte{}, []byte{7})
	f.Fuzz(func(t *testing.T, data, chunks []byte) {
		c := echotest.Dial(t, inProcess())
		i := 0
		chunk := func() int { // sizes cycle through chunks, in steps of 64 bytes
			if len(chunks) == 0 {
				return len(data) + 1
			}
			i++
			return 1 + int(chunks[i%len(chunks)])*64
		}
		if err := verify(c, data, chunk, 32<<10, 0); err != nil {
			t.Fatal(err)
		}
	})
}

var (
	errCorrupt = errors.New("corrupt echo")
	errCut     = errors.New("connection cut early")
)

// verify writes data on c in chunks of chunk() bytes, half-closes, and checks
// every byte that comes back, reading readSize at a time with pause between
// reads, until the server closes.
func verify(c *net.TCPConn, data []byte, chunk func() int, readSize int, pause time.Duration) error {
	werr := make(chan error, 1)
	go func() {
		for rest := data; len(rest) > 0; {
			n := min(chunk(), len(rest))
			if _, err := c.Write(rest[:n]); err != nil {
				werr <- err
				return
			}
			rest = rest[n:]
		}
		werr <- c.CloseWrite()
	}()
	buf := make([]byte, readSize)
	got := 0
	for {
		n, err := c.Read(buf)
		if !bytes.Equal(buf[:n], data[got:min(got+n, len(data))]) {
			return fmt.Errorf("%w at byte %d", errCorrupt, got)
		}
		got += n
		if err == io.EOF && got < len(data) {
			return fmt.Errorf("%w: %d of %d bytes", errCut, got, len(data))
		}
		if err == io.EOF {
			return <-werr
		}
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", got, len(data), err)
		}
		time.Sleep(pause)
	}
}

// TestSoak runs random episodes from four clients per worker until -soak is
// over, and checks every echoed byte.
func TestSoak(t *testing.T) {
	const workers = 8
	s := startServer(t, "-workers", strconv.Itoa(workers))
	pid := s.Cmd.Process.Pid
	rest := fdCount(pid)
	var episodes, checked, corrupt, cut, failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	end := time.Now().Add(*soakFor)
	var wg sync.WaitGroup
	for id := range 4 * workers {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
			for time.Now().Before(end) {
				n, err := episode(s.Addr, rng)
				episodes.Add(1)
				checked.Add(int64(n))
				switch {
				case err == nil:
					continue
				case errors.Is(err, errCorrupt):
					corrupt.Add(1)
				case errors.Is(err, errCut):
					cut.Add(1)
				default:
					failed.Add(1)
				}
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	summary := fmt.Sprintf("soak %v: %d episodes, %d bytes checked, %d corrupt, %d cut early, %d errors",
		*soakFor, episodes.Load(), checked.Load(), corrupt.Load(), cut.Load(), failed.Load())
	t.Log(summary)
	if corrupt.Load()+cut.Load()+failed.Load() > 0 {
		t.Errorf("%s; first: %v", summary, firstErr)
	}
	backToRest(t, pid, rest)
}

// episode is one random client session; it returns how many echoed bytes it
// checked.
func episode(addr string, rng *mrand.Rand) (int, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	c := nc.(*net.TCPConn)
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	wrng := mrand.New(mrand.NewPCG(rng.Uint64(), rng.Uint64())) // for the writer goroutine
	switch rng.IntN(5) {
	case 0: // a verified echo of random size and chunking, ending in a half-close
		data := echotest.Random(rng.IntN(256 << 10))
		return len(data), verify(c, data, func() int { return 1 + wrng.IntN(64<<10) }, 32<<10, 0)
	case 1: // a reset mid-stream
		data := echotest.Random(1 + rng.IntN(64<<10))
		if _, err := c.Write(data); err != nil {
			return 0, err
		}
		half := make([]byte, len(data)/2)
		if _, err := io.ReadFull(c, half); err != nil {
			return 0, fmt.Errorf("%w: %v", errCut, err)
		}
		if !bytes.Equal(half, data[:len(half)]) {
			return 0, errCorrupt
		}
		c.SetLinger(0)
		return len(half), nil
	case 2: // connect and close
		return 0, nil
	case 3: // a slow reader of a MiB
		data := echotest.Random(1 << 20)
		return len(data), verify(c, data, func() int { return 64 << 10 }, 4<<10, 500*time.Microsecond)
	default: // many tiny writes
		data := echotest.Random(2000)
		return len(data), verify(c, data, func() int { return 1 + wrng.IntN(3) }, 1<<10, 0)
	}
}
