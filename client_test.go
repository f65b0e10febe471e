package main

import (
	"bufio"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runClient runs the client on input and returns what it printed.
func runClient(t *testing.T, input string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(clientBin, args...)
	cmd.Stdin = strings.NewReader(input)
	return run(t, cmd)
}

func hostPort(t *testing.T, addr string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return []string{host, port}
}

func TestClientPipe(t *testing.T) {
	s := startServer(t)
	input := "hello\n\x00binary\x01\xff\n" + strings.Repeat("long ", 50000) + "\n\nno newline at the end"
	out, errOut, code := runClient(t, input, hostPort(t, s.addr)...)
	if code != 0 || out != input || errOut != "" {
		t.Errorf("exit %d, stderr %q; stdout equal to input: %v", code, errOut, out == input)
	}
}

func TestClientGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	begin := time.Now()
	_, errOut, code := runClient(t, "hello\n", append([]string{"-retries", "3", "-wait", "100ms"}, hostPort(t, addr)...)...)
	if code != 1 || !strings.Contains(errOut, "client: giving up on "+addr+" after 3 retries") {
		t.Errorf("exit %d, stderr %q; want 1 and giving up", code, errOut)
	}
	if n := strings.Count(errOut, "retry "); n != 3 {
		t.Errorf("%d retries reported, want 3:\n%s", n, errOut)
	}
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Errorf("gave up after %v: the retries were not -wait apart", d)
	}
}

// TestClientReconnects stops the server between two lines and starts it
// again on the same port: the client reconnects and resends.
func TestClientReconnects(t *testing.T) {
	s := startServer(t, "-grace", "100ms") // the client keeps its connection open
	cmd := exec.Command(clientBin, append([]string{"-retries", "200", "-wait", "50ms"}, hostPort(t, s.addr)...)...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 2)
	go func() {
		for sc := bufio.NewScanner(stdout); sc.Scan(); {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q within 10s", want)
		}
	}
	stdin.Write([]byte("one\n"))
	expect("one")
	s.stop(t, 5*time.Second)
	stdin.Write([]byte("two\n")) // sent while nothing listens
	startServer(t, "-addr", s.addr)
	expect("two")
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("client exited with %v at end of input", err)
	}
}

// TestClientPostServer talks to a server that behaves like the post's C++:
// it replies once, with a prefix, and closes. Each line gets its reply
// without a pause, since only a fresh connection's failure is retried late.
func TestClientPostServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // e.g., the test is over
			}
			buf := make([]byte, 1024)
			n, _ := c.Read(buf)
			c.Write(append([]byte("tcpserver加工处理数据:"), buf[:n]...))
			c.Close()
		}
	}()
	out, errOut, code := runClient(t, "a\nb\nc\n", append([]string{"-wait", "5s"}, hostPort(t, ln.Addr().String())...)...)
	want := "tcpserver加工处理数据:a\ntcpserver加工处理数据:b\ntcpserver加工处理数据:c\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
}

func TestClientUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"127.0.0.1"}, {"127.0.0.1", "http"}, {"127.0.0.1", "70000"}, {"-retries"}} {
		_, errOut, code := runClient(t, "", args...)
		if code != 2 || !strings.HasPrefix(errOut, "client: ") && !strings.Contains(errOut, "flag needs an argument") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a usage line", args, code, errOut)
		}
	}
}
