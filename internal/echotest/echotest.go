// Package echotest holds what the tests of both servers need: building the
// binaries, running them, talking to them, and waiting with a bound.
package echotest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildFlags has -race when the tests run with the race detector (see race.go).
var BuildFlags []string

// Build builds each package pkg into out, as go build -o out pkg; flags come first.
func Build(out, pkg string, flags []string) error {
	args := append(append([]string{"build"}, flags...), "-o", out, pkg)
	if b, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// NeedTool skips the test unless name is on PATH; pkg is the Debian
// package that has it.
func NeedTool(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("needs %s (apt-get install %s)", name, pkg)
	}
}

// Poll waits up to d for cond, failing the test with what if it never holds.
func Poll(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(d, cond) {
		t.Fatalf("after %v: %s", d, what)
	}
}

// Until waits up to d for cond, and says whether it came to hold.
func Until(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			return false
		}
	}
	return true
}

// Proc is a server started with -foreground, killed at the end of the test.
type Proc struct {
	Cmd    *exec.Cmd
	Addr   string
	mu     sync.Mutex
	stderr bytes.Buffer
	Done   chan struct{} // closed once the process has exited
	Err    error         // its exit status, valid after Done
}

// Start starts cmd, a server in the foreground, and returns once it has
// logged its start line (msg=start addr=...).
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	s := &Proc{Cmd: cmd, Done: make(chan struct{})}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	untrack := startTracked(t, cmd)
	t.Cleanup(func() { cmd.Process.Kill(); <-s.Done })
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			if i := strings.Index(line, "msg=start addr="); i >= 0 {
				started <- strings.Fields(line[i+len("msg=start addr="):])[0]
			}
			s.mu.Lock()
			s.stderr.WriteString(line + "\n")
			s.mu.Unlock()
		}
		s.Err = cmd.Wait()
		untrack()
		close(s.Done)
	}()
	select {
	case s.Addr = <-started:
	case <-s.Done:
		t.Fatalf("%s exited at start: %v\n%s", cmd.Path, s.Err, s.Log())
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not start\n%s", cmd.Path, s.Log())
	}
	return s
}

// Log returns what the server has written to stderr so far.
func (s *Proc) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// Stop sends SIGTERM and waits up to d for a clean exit.
func (s *Proc) Stop(t testing.TB, d time.Duration) {
	t.Helper()
	s.Cmd.Process.Signal(syscall.SIGTERM)
	s.Wait(t, d)
}

// Wait waits up to d for a clean exit.
func (s *Proc) Wait(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case <-s.Done:
		if s.Err != nil {
			t.Fatalf("%s exited with %v\n%s", s.Cmd.Path, s.Err, s.Log())
		}
	case <-time.After(d):
		t.Fatalf("%s still running after %v", s.Cmd.Path, d)
	}
}

// Dial connects to addr, closed at the end of the test, with a 30 s deadline.
func Dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// MustEcho streams data through c while reading the echo, half-closes, and
// checks that exactly data comes back before the server's close.
func MustEcho(t testing.TB, c *net.TCPConn, data []byte) {
	t.Helper()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", len(got), err)
	}
	if err := <-werr; err != nil {
		t.Fatal("write:", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo differs: sent %d bytes, got %d, first difference at %d", len(data), len(got), FirstDiff(got, data))
	}
}

// FirstDiff returns the first index at which a and b differ.
func FirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Random returns n random bytes.
func Random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// AwaitRefused waits until addr refuses new clients, as it does once a stop has begun.
func AwaitRefused(t testing.TB, addr string) {
	t.Helper()
	Poll(t, 5*time.Second, "new connections still accepted after the signal", func() bool {
		nc, err := net.Dial("tcp", addr)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
}

// IsTimeout reports whether err is a deadline's.
func IsTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// RunCmd runs cmd to its end, killing it after 20 s, and returns what it printed.
func RunCmd(t testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	return RunCmdWithin(t, 20*time.Second, cmd)
}

// RunCmdWithin is RunCmd for a command whose work is long by design: it is
// killed after d.
func RunCmdWithin(t testing.TB, d time.Duration, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second // a daemon that kept our stdout would hang us
	untrack := startTracked(t, cmd)
	timer := time.AfterFunc(d, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	untrack()
	if !timer.Stop() {
		t.Fatalf("%s still running after %v; stderr:\n%s", cmd.Path, d, errb.String())
	}
	return out.String(), errb.String(), ExitCode(err)
}

// ExitCode is err's exit status: 0 for nil, -1 if the process did not exit.
func ExitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// SyncBuffer collects a process's output while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CodeBlocks returns the fenced code blocks of a Markdown text.
func CodeBlocks(md string) []string {
	var blocks []string
	parts := strings.Split(md, "\n```")
	for i := 1; i < len(parts); i += 2 {
		_, body, _ := strings.Cut(parts[i], "\n") // after the language
		blocks = append(blocks, body+"\n")
	}
	return blocks
}
