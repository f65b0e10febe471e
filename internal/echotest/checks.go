package echotest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server starts a server under test in the foreground on a free loopback
// port, with args, as each test suite's startServer does. The checks below
// hold for both servers: the post's, at the top, and production's.
type Server func(t testing.TB, args ...string) *Proc

func EchoBinary(t *testing.T, startServer Server) {
	s := startServer(t)
	var all []byte
	for i := range 512 {
		all = append(all, byte(i)) // every byte value, NUL included, twice
	}
	MustEcho(t, Dial(t, s.Addr), all)
}

func EchoLargeStream(t *testing.T, startServer Server) {
	s := startServer(t)
	MustEcho(t, Dial(t, s.Addr), Random(8<<20)) // far more than the socket buffers: echoed while streaming
}

func EchoHalfClose(t *testing.T, startServer Server) {
	s := startServer(t)
	c := Dial(t, s.Addr)
	c.Write([]byte("before FIN"))
	c.CloseWrite()
	got, err := io.ReadAll(c) // the server echoes what is pending, then closes
	if err != nil || string(got) != "before FIN" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// MoreClientsThanWorkers connects 40 clients to 2 workers and a queue of 1.
// The rest wait in the listen backlog: each connect completes at once, where a
// backlog of 10, as in the post, keeps 11 and makes the 12th resend its SYN a
// second later. Then every client is served.
func MoreClientsThanWorkers(t *testing.T, startServer Server) {
	s := startServer(t, "-workers", "2", "-queue", "1")
	var conns []*net.TCPConn
	begin := time.Now()
	for range 40 {
		conns = append(conns, Dial(t, s.Addr))
	}
	if d := time.Since(begin); d > 900*time.Millisecond {
		t.Errorf("40 connects took %v; a full backlog makes a client wait 1s", d)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { MustEcho(t, c, Random(64<<10)) })
	}
	wg.Wait()
}

// IdleFreesWorker holds both workers with clients that never send, then
// with clients that never read, and expects the next client to be served
// once -idle has passed, and not much later.
func IdleFreesWorker(t *testing.T, startServer Server) {
	for _, tc := range []struct {
		name string
		hold func(c *net.TCPConn)
	}{
		{"silent", func(c *net.TCPConn) {}},
		{"never reads", func(c *net.TCPConn) { go c.Write(make([]byte, 16<<20)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, "-workers", "2", "-queue", "1", "-idle", "500ms")
			begin := time.Now() // -idle counts from the holders' last word, which is after this
			holders := []*net.TCPConn{Dial(t, s.Addr), Dial(t, s.Addr)}
			for _, h := range holders {
				tc.hold(h)
			}
			c := Dial(t, s.Addr)
			c.SetDeadline(time.Now().Add(5 * time.Second)) // without -idle, it would wait forever
			MustEcho(t, c, []byte("served"))
			if d := time.Since(begin); d < 400*time.Millisecond || d > 2*time.Second {
				t.Errorf("served after %v, want about -idle (500ms)", d)
			}
			for _, h := range holders {
				h.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, h); IsTimeout(err) {
					t.Error("an idle connection was not closed")
				}
			}
		})
	}
}

// EchoWithTools talks to echod with the tools a user would: socat and
// nc send every byte of their input, half-close, and print the echo.
func EchoWithTools(t *testing.T, startServer Server) {
	s := startServer(t)
	host, port, _ := net.SplitHostPort(s.Addr)
	data := Random(1 << 20)
	for _, tc := range []struct {
		pkg  string
		argv []string
	}{{"socat", []string{"socat", "-t", "10", "-", "TCP:" + s.Addr}}, {"netcat-openbsd", []string{"nc", "-N", host, port}}} {
		t.Run(tc.argv[0], func(t *testing.T) {
			NeedTool(t, tc.argv[0], tc.pkg)
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Stdin = bytes.NewReader(data)
			out, errOut, code := RunCmd(t, cmd)
			if code != 0 || out != string(data) {
				t.Errorf("exit %d, stderr %q, %d of %d bytes back, equal: %v", code, errOut, len(out), len(data), out == string(data))
			}
		})
	}
}

// OutOfDescriptors connects 60 clients to s, a server started with 24
// descriptors. The post exits on the first EMFILE; the server must back off
// without spinning or flooding its log, and serve again once the clients leave.
func OutOfDescriptors(t *testing.T, s *Proc) {
	pid := s.Cmd.Process.Pid
	var clients []*net.TCPConn
	for range 60 {
		clients = append(clients, Dial(t, s.Addr))
	}
	Poll(t, 5*time.Second, "no EMFILE logged", func() bool { return strings.Contains(s.Log(), "too many open files") })
	before := CPUTime(t, pid)
	time.Sleep(2 * time.Second) // a window to measure, not to wait for something
	used := CPUTime(t, pid) - before
	t.Logf("out of descriptors: %v of CPU in 2 s, log %d bytes", used, len(s.Log()))
	if used > 200*time.Millisecond {
		t.Errorf("%v of CPU in 2 s while out of descriptors: spinning", used)
	}
	if n := len(s.Log()); n > 4<<10 {
		t.Errorf("log grew to %d bytes", n)
	}
	for _, c := range clients {
		c.Close()
	}
	c := Dial(t, s.Addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	MustEcho(t, c, []byte("served again"))
	select {
	case <-s.Done:
		t.Fatalf("echod exited: %v", s.Err)
	default:
	}
}

// CPUTime is the CPU time pid's threads have used so far, to the nanosecond
// (/proc/PID/task/TID/schedstat).
func CPUTime(t testing.TB, pid int) time.Duration {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, p := range paths {
		s, _ := os.ReadFile(p)
		ns, _ := strconv.ParseInt(strings.Fields(string(s) + " 0")[0], 10, 64)
		sum += ns
	}
	if sum == 0 {
		t.Fatalf("no CPU time for pid %d", pid)
	}
	return time.Duration(sum)
}

// LockFollowsRemoval races a start against a daemon that removes its
// PID file and exits: a start that wins must hold the lock on the file that
// is at the path, not on the removed one.
func LockFollowsRemoval(t *testing.T, lockPID func(path string) (*os.File, error)) {
	path := filepath.Join(t.TempDir(), "echod.pid")
	for i := range 3000 {
		running, err := lockPID(path)
		if err != nil {
			t.Fatal(err)
		}
		stopped := make(chan struct{})
		go func() { os.Remove(path); running.Close(); close(stopped) }()
		f, err := lockPID(path)
		<-stopped
		if err != nil {
			continue // e.g., already running: the start came first
		}
		fi, _ := f.Stat()
		at, _ := os.Stat(path)
		f.Close()
		if !os.SameFile(fi, at) {
			t.Fatalf("start %d locked a PID file that is no longer at %s", i, path)
		}
	}
}
