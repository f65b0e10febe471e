package main

import (
	"bufio"
	"echod/internal/echotest"
	"io"
	"net"
	"os"
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
	return echotest.RunCmd(t, cmd)
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
	out, errOut, code := runClient(t, input, hostPort(t, s.Addr)...)
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

// talk starts cmd, to be killed when the test ends, and returns its stdin,
// the lines of its stdout, and expect, which waits up to 10s for the next
// line and checks it.
func talk(t *testing.T, cmd *exec.Cmd) (stdin io.WriteCloser, lines <-chan string, expect func(want string)) {
	t.Helper()
	stdin, _ = cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ch := make(chan string, 2)
	go func() {
		for sc := bufio.NewScanner(stdout); sc.Scan(); {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return stdin, ch, func(want string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("%s printed %q, want %q", cmd.Path, got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q from %s within 10s", want, cmd.Path)
		}
	}
}

// TestClientReconnects stops the server between two lines and starts it
// again on the same port: the client reconnects and resends.
func TestClientReconnects(t *testing.T) {
	s := startServer(t, "-grace", "100ms") // the client keeps its connection open
	cmd := exec.Command(clientBin, append([]string{"-retries", "200", "-wait", "50ms"}, hostPort(t, s.Addr)...)...)
	stdin, _, expect := talk(t, cmd)
	stdin.Write([]byte("one\n"))
	expect("one")
	s.Stop(t, 5*time.Second)
	stdin.Write([]byte("two\n")) // sent while nothing listens
	startServer(t, "-addr", s.Addr)
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

// TestClientUsage: each mistake is one line that says what is wrong and what is right, and exit 2; -h shows
// HOST and PORT with the flags, on stdout, and exits 0.
func TestClientUsage(t *testing.T) {
	out, errOut, code := runClient(t, "", "-h")
	if code != 0 || !strings.HasPrefix(out, "usage: client [flags] HOST PORT\n") || !strings.Contains(out, "-timeout") || errOut != "" {
		t.Errorf("-h: exit %d, stdout %q, stderr %q; want 0, and the usage with HOST PORT on stdout", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "want HOST and PORT"}, {[]string{"127.0.0.1"}, "want HOST and PORT"},
		{[]string{"127.0.0.1", "http"}, `PORT "http": want a number from 1 to 65535`}, {[]string{"127.0.0.1", "8080x"}, "PORT"},
		{[]string{"127.0.0.1", "70000"}, "PORT"}, {[]string{"-retries"}, "flag needs an argument: -retries"},
		{[]string{"-retries", "-1", "127.0.0.1", "1"}, "out of range; want -retries 0 or more"}, {[]string{"-wait", "-1s", "127.0.0.1", "1"}, "out of range; want"},
		{[]string{"-timeout", "0s", "127.0.0.1", "1"}, "out of range; want -retries 0 or more, -wait 0s or more, -timeout above 0s"}, {[]string{"a]b", "1"}, `HOST "a]b"`},
		{[]string{"[::1]]", "1"}, "HOST"}, {[]string{"-wait", "5", "127.0.0.1", "1"}, `invalid value "5" for flag -wait: parse error; want`},
		{[]string{"-bogus", "127.0.0.1", "1"}, "flag provided but not defined: -bogus"},
	} {
		_, errOut, code := runClient(t, "", tc.args...)
		if code != 2 || !strings.HasPrefix(errOut, "client: "+tc.want) || strings.Count(errOut, "\n") != 1 ||
			!strings.HasSuffix(errOut, "(usage: client [flags] HOST PORT; -h lists the flags)\n") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one line: client: %s...", tc.args, code, errOut, tc.want)
		}
	}
}

// TestClientLongLine sends a 16 MiB line, about twice what the socket
// buffers hold (a client that does not read blocks after 8.4 MiB on a
// tcp_rmem max of 32 MiB): the client must read the echo while it writes, or
// both sides block, and it gives up after -timeout (10s). Under -race the
// client takes 2.2 s alone and 25 s beside six busy loops on 2 cores: a minute's
// bound, not RunCmd's 20 s.
func TestClientLongLine(t *testing.T) {
	t.Parallel() // it keeps a core busy for seconds, while the other parallel tests mostly wait
	s := startServer(t)
	line := strings.Repeat("0123456789abcdef", 1<<20) + "\n"
	cmd := exec.Command(clientBin, append([]string{"-retries", "0"}, hostPort(t, s.Addr)...)...)
	cmd.Stdin = strings.NewReader(line)
	out, errOut, code := echotest.RunCmdWithin(t, time.Minute, cmd)
	if code != 0 || out != line {
		t.Errorf("exit %d, stderr %q; %d of %d bytes back, equal: %v", code, errOut, len(out), len(line), out == line)
	}
}

// fakeServer accepts connections and hands each to serve, until the test ends.
func fakeServer(t *testing.T, serve func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // e.g., the test is over
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// TestClientTimeout talks to a server that accepts and never answers: each
// attempt ends after -timeout, and the client gives up, naming the server.
func TestClientTimeout(t *testing.T) {
	addr := fakeServer(t, func(c net.Conn) { io.Copy(io.Discard, c); <-t.Context().Done(); c.Close() })
	args := append([]string{"-timeout", "200ms", "-retries", "2", "-wait", "10ms"}, hostPort(t, addr)...)
	_, errOut, code := runClient(t, "hello\n", args...)
	if code != 1 || !strings.Contains(errOut, "client: giving up on "+addr+" after 2 retries") || !strings.Contains(errOut, "i/o timeout") {
		t.Errorf("exit %d, stderr %q; want 1, giving up after timeouts", code, errOut)
	}
}

// TestClientSlowReply talks to a server that echoes a 100-byte line a byte
// every 40ms, 4s in all: -timeout 3s bounds a stall, so the reply arrives.
// (500ms was too close on a busy machine: a pause of the server's can pass it.)
func TestClientSlowReply(t *testing.T) {
	t.Parallel() // it mostly waits: on the server's pace, or for -grace
	addr := fakeServer(t, func(c net.Conn) {
		defer c.Close()
		b, _ := io.ReadAll(c)
		for i := range b {
			time.Sleep(40 * time.Millisecond) // the server's pace, not a wait for an event: 4s in all
			c.Write(b[i : i+1])
		}
	})
	line := strings.Repeat("x", 99) + "\n"
	out, errOut, code := runClient(t, line, append([]string{"-timeout", "3s", "-retries", "0"}, hostPort(t, addr)...)...)
	if code != 0 || out != line {
		t.Errorf("exit %d, stdout %q, stderr %q; want the whole line", code, out, errOut)
	}
}

// TestClientIPv6 gives the address as echod prints it, in brackets.
func TestClientIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback here:", err)
	} else {
		ln.Close()
	}
	s := startServer(t, "-addr", "[::1]:0")
	host, port, _ := net.SplitHostPort(s.Addr)
	out, errOut, code := runClient(t, "hello\n", "-retries", "0", "["+host+"]", port)
	if code != 0 || out != "hello\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestClientShortReply sends a last line without a newline to a server that
// echoes half of it and closes: that is a failure, not a reply.
func TestClientShortReply(t *testing.T) {
	addr := fakeServer(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Write(b[:len(b)/2])
		c.Close()
	})
	_, errOut, code := runClient(t, "no newline at the end", append([]string{"-retries", "1", "-wait", "10ms"}, hostPort(t, addr)...)...)
	if code != 1 || !strings.Contains(errOut, "reply cut short: 10 of 21 bytes") {
		t.Errorf("exit %d, stderr %q; want 1 and reply cut short", code, errOut)
	}
}

func TestClientStdoutFull(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer full.Close()
	cmd := exec.Command(clientBin, hostPort(t, startServer(t).Addr)...)
	cmd.Stdin, cmd.Stdout = strings.NewReader("hello\n"), full
	var errOut strings.Builder
	cmd.Stderr = &errOut
	if err := cmd.Run(); echotest.ExitCode(err) != 1 || !strings.Contains(errOut.String(), "client: writing the reply: write /dev/stdout: no space left on device") {
		t.Errorf("%v, stderr %q; want exit 1 and the write error", err, errOut.String())
	}
}

// TestClientPrompt types a line and Ctrl-D on a terminal, through script(1):
// the client prompts, and after Ctrl-D ends the prompt's line.
func TestClientPrompt(t *testing.T) {
	echotest.NeedTool(t, "script", "bsdutils")
	s := startServer(t)
	cmd := exec.Command("script", "-qec", clientBin+" "+strings.Join(hostPort(t, s.Addr), " "), "/dev/null")
	cmd.Stdin = strings.NewReader("hello\n\x04")
	out, errOut, code := echotest.RunCmd(t, cmd)
	if want := "Please enter# \r\n"; code != 0 || !strings.Contains(out, "hello\r\nPlease enter# ") || !strings.HasSuffix(out, want) {
		t.Errorf("exit %d, stderr %q, terminal %q; want a prompt, the reply, and %q at the end", code, errOut, out, want)
	}
}
