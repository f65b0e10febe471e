package main

import (
	"echod/internal/echotest"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	echodBin  string // built once by TestMain, with the race detector if the tests have it
	clientBin string
	plainBin  string // echod without the race detector, for measuring CPU and memory
)

// standIn, where set, runs this process as a stand-in for another program if
// the environment asks for one, and reports whether it did.
var standIn func() bool

// adopt, where set, makes this process adopt what its children leave
// running, so that the tests find it among their own (see echotest.Running).
var adopt func()

func TestMain(m *testing.M) {
	if kind := os.Getenv(benchServerEnv); kind != "" {
		benchServer(kind) // this process is a benchmark's server, see bench_test.go
		return
	} else if standIn != nil && standIn() {
		return // this process stood in for a new daemon, see move_linux_test.go
	}
	if adopt != nil {
		adopt()
	}
	echotest.Main(m, func(dir string) error {
		echodBin, clientBin, plainBin = filepath.Join(dir, "echod"), filepath.Join(dir, "client"), filepath.Join(dir, "plain", "echod")
		for _, b := range []struct {
			bin, pkg string
			flags    []string
		}{{echodBin, ".", echotest.BuildFlags}, {clientBin, "../client", echotest.BuildFlags}, {plainBin, ".", nil}} {
			if err := echotest.Build(b.bin, b.pkg, b.flags); err != nil {
				return err
			}
		}
		return nil
	})
}

// startServer runs echod -foreground on a free loopback port and returns once
// it has logged its start line.
func startServer(t testing.TB, args ...string) *echotest.Proc {
	t.Helper()
	cmd := exec.Command(echodBin, append([]string{"-foreground", "-addr", "127.0.0.1:0"}, args...)...)
	return echotest.Start(t, cmd)
}

func TestEchoBinary(t *testing.T) { echotest.EchoBinary(t, startServer) }

func TestEchoLargeStream(t *testing.T) { echotest.EchoLargeStream(t, startServer) }

func TestEchoHalfClose(t *testing.T) { echotest.EchoHalfClose(t, startServer) }

func TestMoreClientsThanWorkers(t *testing.T) { echotest.MoreClientsThanWorkers(t, startServer) }

func TestIdleFreesWorker(t *testing.T) { echotest.IdleFreesWorker(t, startServer) }

// TestIdleKeepsActiveConnection keeps a connection busy for 2.5 times
// -idle, and past -grace: it must survive, since the idle deadline moves with
// every read and write, and the grace period starts only at SIGTERM. (-idle
// is 1s, not less: a loaded machine's stall of a few hundred ms is no idle
// client.)
func TestIdleKeepsActiveConnection(t *testing.T) {
	s := startServer(t, "-idle", "1s", "-grace", "200ms")
	c := echotest.Dial(t, s.Addr)
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := c.Write([]byte("tick")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatalf("an active connection was cut: %v", err)
		}
	}
}

// TestShutdownCompletesTransfer sends SIGTERM while a transfer is in flight:
// new clients are refused, the transfer completes, and echod exits 0.
func TestShutdownCompletesTransfer(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "echod.pid")
	s := startServer(t, "-grace", "20s", "-pidfile", pidfile)
	c := echotest.Dial(t, s.Addr)
	first := echotest.Random(1 << 20)
	go c.Write(first)
	if _, err := io.ReadFull(c, make([]byte, len(first))); err != nil {
		t.Fatal(err)
	}
	s.Cmd.Process.Signal(syscall.SIGTERM)
	echotest.AwaitRefused(t, s.Addr)
	echotest.MustEcho(t, c, echotest.Random(4<<20))
	s.Wait(t, 10*time.Second)
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("PID file left: %v", err)
	}
	if !strings.Contains(s.Log(), "msg=stop") {
		t.Errorf("no stop line in the log:\n%s", s.Log())
	}
}

// TestShutdownGraceExpires keeps every worker busy and the queue full with
// clients that never finish: SIGTERM cuts the busy one after -grace, not
// before, and echod exits.
func TestShutdownGraceExpires(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "echod.pid")
	s := startServer(t, "-workers", "1", "-queue", "1", "-grace", "500ms", "-pidfile", pidfile)
	busy := echotest.Dial(t, s.Addr)
	busy.Write([]byte("x"))
	if _, err := io.ReadFull(busy, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	for range 3 { // one in the queue, one held by the accept loop, one in the backlog
		echotest.Dial(t, s.Addr)
	}
	cut := make(chan time.Duration, 1)
	begin := time.Now()
	s.Cmd.Process.Signal(syscall.SIGTERM)
	go func() { io.Copy(io.Discard, busy); cut <- time.Since(begin) }()
	s.Wait(t, 5*time.Second)
	if d := <-cut; d < 400*time.Millisecond {
		t.Errorf("the busy connection was cut %v after SIGTERM, before -grace (500ms)", d)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("PID file left: %v", err)
	}
}

// TestShutdownServesAccepted has the one worker busy and a second client
// accepted, waiting for it, when SIGTERM comes: once the first finishes, the
// second is served too, within -grace. A reload stops the old daemon the same
// way, so no client it accepted is reset.
func TestShutdownServesAccepted(t *testing.T) {
	s := startServer(t, "-workers", "1", "-queue", "0", "-grace", "20s")
	busy := echotest.Dial(t, s.Addr)
	busy.Write([]byte("x"))
	if _, err := io.ReadFull(busy, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	pid := s.Cmd.Process.Pid
	rest := fdCount(pid)
	waiting := echotest.Dial(t, s.Addr)
	echotest.Poll(t, 5*time.Second, "the second client was not accepted", func() bool { return fdCount(pid) > rest })
	s.Cmd.Process.Signal(syscall.SIGTERM)
	echotest.AwaitRefused(t, s.Addr)
	busy.CloseWrite()
	echotest.MustEcho(t, waiting, []byte("accepted before SIGTERM, served after"))
	s.Wait(t, 5*time.Second)
}

// TestSecondSignalStopsAtOnce presses Ctrl-C twice in the foreground: the
// first starts a graceful stop, which a busy client would make last -grace;
// the second ends echod at once.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	s := startServer(t, "-grace", "20s")
	busy := echotest.Dial(t, s.Addr)
	mustWrite := func() {
		busy.Write([]byte("x"))
		if _, err := io.ReadFull(busy, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite()
	s.Cmd.Process.Signal(syscall.SIGINT)
	echotest.AwaitRefused(t, s.Addr)
	mustWrite() // still served during the graceful stop
	s.Cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.Done:
	case <-time.After(3 * time.Second):
		t.Fatal("still running 3s after the second SIGINT")
	}
}

// TestForegroundHangup: in -foreground, SIGHUP keeps its default and ends
// echod, as a closed terminal ends its jobs; reload is for daemons.
func TestForegroundHangup(t *testing.T) {
	s := startServer(t)
	s.Cmd.Process.Signal(syscall.SIGHUP)
	select {
	case <-s.Done:
		if ws, ok := s.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGHUP {
			t.Errorf("exit %v, want death by SIGHUP", s.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still running after SIGHUP")
	}
}

// TestUsageErrors gives echod bad flags: exit 2, and one line that says what is wrong and what a right value looks
// like (not the whole usage); nothing is started or written. -h lists the flags on stdout, and exits 0.
func TestUsageErrors(t *testing.T) {
	out, errOut, code := echotest.RunCmd(t, exec.Command(echodBin, "-h"))
	if code != 0 || !strings.Contains(out, "-grace duration") || errOut != "" {
		t.Errorf("-h: exit %d, stdout %q, stderr %q; want 0 and the flags on stdout", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-workers", "0"}, "echod: want -workers 1 to 10000, such as 64, and -queue 0 to 100000"},
		{[]string{"-workers", "1000000000"}, "echod: want -workers 1 to 10000, such as 64, and -queue 0 to 100000"},
		{[]string{"-queue", "-1"}, "echod: want -workers 1 to 10000, such as 64, and -queue 0 to 100000"},
		{[]string{"-queue", "100000000000000"}, "echod: want -workers 1 to 10000, such as 64, and -queue 0 to 100000"},
		{[]string{"-idle", "0s"}, "echod: want -idle above 0 and at most 100000h, such as 1m, and -grace 0 or more, such as 5s (echod -h lists the flags)\n"},
		{[]string{"-grace", "-1s"}, "echod: want -idle above 0 and at most 100000h, such as 1m, and -grace 0 or more"},
		{[]string{"-addr", "127.0.0.1"}, "echod: -addr: address 127.0.0.1: missing port in address; want host:port"},
		{[]string{"-addr", "127.0.0.1:99999"}, "echod: -addr: address 99999: invalid port"},
		{[]string{"-idle", "2500000h"}, "echod: want -idle above 0 and at most 100000h"},
		{[]string{"extra"}, `echod: unexpected argument "extra"`},
		{[]string{"-idle", "5"}, `echod: invalid value "5" for flag -idle: parse error; want -idle <duration>, such as -idle=1m0s (echod -h lists the flags)` + "\n"},
		{[]string{"-workers", "x"}, `echod: invalid value "x" for flag -workers: parse error; want -workers <int>, such as -workers=64`},
		{[]string{"-foreground=x"}, `echod: invalid boolean value "x" for -foreground: parse error; want -foreground <bool>, such as -foreground=false`},
		{[]string{"-foregroud"}, "echod: flag provided but not defined: -foregroud (echod -h lists the flags)\n"},
	} {
		dir := t.TempDir()
		cmd := exec.Command(echodBin, append(tc.args, "-foreground")...)
		cmd.Dir = dir
		_, errOut, code := echotest.RunCmd(t, cmd)
		if code != 2 || !strings.HasPrefix(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
		if files, _ := os.ReadDir(dir); len(files) > 0 {
			t.Errorf("%v left %v", tc.args, files)
		}
	}
}

func TestEchoWithTools(t *testing.T) { echotest.EchoWithTools(t, startServer) }
