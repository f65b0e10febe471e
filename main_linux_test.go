package main

import (
	"echod/internal/echotest"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var echodBin string // the top-level echod, built once by TestMain

// adopt, where set, makes this process adopt what its children leave
// running, so that the tests find a daemon among their own (see
// echotest.Running).
var adopt func()

func TestMain(m *testing.M) {
	if adopt != nil {
		adopt()
	}
	echotest.Main(m, func(dir string) error {
		echodBin = filepath.Join(dir, "echod")
		return echotest.Build(echodBin, ".", echotest.BuildFlags)
	})
}

// startServer runs echod -foreground on a free loopback port and returns
// once it has logged its start line.
func startServer(t testing.TB, args ...string) *echotest.Proc {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "echod.pid")
	args = append([]string{"-foreground", "-addr", "127.0.0.1:0", "-pidfile", pidfile}, args...)
	return echotest.Start(t, exec.Command(echodBin, args...))
}

func TestEchoBinary(t *testing.T)             { echotest.EchoBinary(t, startServer) }
func TestEchoLargeStream(t *testing.T)        { echotest.EchoLargeStream(t, startServer) }
func TestEchoHalfClose(t *testing.T)          { echotest.EchoHalfClose(t, startServer) }
func TestEchoWithTools(t *testing.T)          { echotest.EchoWithTools(t, startServer) }
func TestMoreClientsThanWorkers(t *testing.T) { echotest.MoreClientsThanWorkers(t, startServer) }
func TestIdleFreesWorker(t *testing.T)        { echotest.IdleFreesWorker(t, startServer) }

// TestLogPerClient finds the post's two log lines for a client, "get a new
// link" with its address and port, and "quit" with why, in the order they
// happen: a client that half-closes, then one that is cut as idle.
func TestLogPerClient(t *testing.T) {
	s := startServer(t, "-idle", "300ms")
	c := echotest.Dial(t, s.Addr)
	echotest.MustEcho(t, c, []byte("hello"))
	idle := echotest.Dial(t, s.Addr)
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(idle); err != nil {
		t.Fatalf("the idle client was not cut: %v", err)
	}
	echotest.Poll(t, 5*time.Second, "no quit line for the idle client", func() bool {
		return strings.Count(s.Log(), "msg=quit") == 2
	})
	timeout := `"read tcp ` + s.Addr + "->" + idle.LocalAddr().String() + `: i/o timeout"`
	for _, tc := range []struct {
		c   net.Conn
		why string
	}{{c, "EOF"}, {idle, timeout}} {
		client := " client=" + tc.c.LocalAddr().String()
		came := strings.Index(s.Log(), `msg="get a new link"`+client+"\n")
		went := strings.Index(s.Log(), "msg=quit"+client+" err="+tc.why+"\n")
		if came < 0 || went < came {
			t.Errorf("no new link, then quit with err=%s, for%s in the log:\n%s", tc.why, client, s.Log())
		}
	}
}

// TestUsageErrors gives echod bad flags: exit 2, and one line that says
// what is wrong and what is right (not the whole usage); nothing is started
// or written. -h lists the flags on stdout, and exits 0.
func TestUsageErrors(t *testing.T) {
	const want = "want -workers 1 to 10000, -queue 0 to 100000, -idle above 0 with its unit: 1m"
	out, errOut, code := echotest.RunCmd(t, exec.Command(echodBin, "-h"))
	if code != 0 || !strings.Contains(out, "-idle duration") || errOut != "" {
		t.Errorf("-h: exit %d, stdout %q, stderr %q; want 0 and the flags on stdout", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-workers", "0"}, "echod: out of range; " + want + " (echod -h lists the flags)\n"},
		{[]string{"-workers", "1000000000"}, "echod: out of range; " + want},
		{[]string{"-queue", "-1"}, "echod: out of range; " + want},
		{[]string{"-queue", "100001"}, "echod: out of range; " + want},
		{[]string{"-idle", "0s"}, "echod: out of range; " + want},
		{[]string{"-idle", "5"}, `echod: invalid value "5" for flag -idle: parse error; ` + want + " (echod -h lists the flags)\n"},
		{[]string{"-workers", "x"}, `echod: invalid value "x" for flag -workers: parse error; ` + want},
		{[]string{"-addr", "127.0.0.1"}, "echod: -addr: address 127.0.0.1: missing port in address; want host:port"},
		{[]string{"-addr", "127.0.0.1:99999"}, "echod: -addr: address 99999: invalid port"},
		{[]string{"extra"}, `echod: unexpected argument "extra"`},
		{[]string{"-foregroud"}, "echod: flag provided but not defined: -foregroud (echod -h lists the flags)\n"},
		{[]string{"-foreground=x"}, `echod: invalid boolean value "x" for -foreground: parse error (echod -h lists the flags)` + "\n"},
	} {
		dir := t.TempDir()
		echotest.CleanupDaemons(t, dir) // the daemon that flags taken as right would start
		cmd := exec.Command(echodBin, append([]string{"-addr", "127.0.0.1:0"}, tc.args...)...)
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

// TestOutOfDescriptors runs echod with 24 descriptors and connects 60
// clients: accept fails with EMFILE, and echod neither exits, as the post's
// Run() does, nor spins; once the clients go, it serves again.
func TestOutOfDescriptors(t *testing.T) {
	t.Parallel() // it waits: it measures the server's own CPU time, which others' load leaves alone
	echotest.NeedTool(t, "prlimit", "util-linux")
	pidfile := filepath.Join(t.TempDir(), "echod.pid")
	cmd := exec.Command("prlimit", "--nofile=24:24", echodBin, "-foreground", "-addr", "127.0.0.1:0", "-pidfile", pidfile)
	echotest.OutOfDescriptors(t, echotest.Start(t, cmd))
}

// TestCopiedAlone copies the server's .go files with go.mod into an empty
// folder, as someone who takes it as the start of their own daemon does, and
// the client's main.go with go.mod into another; each builds there, and the
// two talk.
func TestCopiedAlone(t *testing.T) {
	bin := map[string]string{}
	for _, tc := range []struct{ name, from string }{{"server", "."}, {"client", "client"}} {
		dir := t.TempDir()
		files, _ := filepath.Glob(filepath.Join(tc.from, "*.go"))
		for _, f := range append(files, "go.mod") {
			if !strings.HasSuffix(f, "_test.go") {
				os.WriteFile(filepath.Join(dir, filepath.Base(f)), must(os.ReadFile(f)), 0o644)
			}
		}
		bin[tc.name] = filepath.Join(dir, tc.name)
		build := exec.Command("go", "build", "-o", bin[tc.name], ".")
		build.Dir = dir
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("the %s, copied alone: go build: %v\n%s", tc.name, err, out)
		}
	}
	pidfile := filepath.Join(t.TempDir(), "echod.pid")
	s := echotest.Start(t, exec.Command(bin["server"], "-foreground", "-addr", "127.0.0.1:0", "-pidfile", pidfile))
	host, port, _ := net.SplitHostPort(s.Addr)
	client := exec.Command(bin["client"], host, port)
	client.Stdin = strings.NewReader("copied\n")
	if out, errOut, code := echotest.RunCmd(t, client); code != 0 || out != "copied\n" {
		t.Errorf("the client, copied alone: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMakeAddr(t *testing.T) {
	t.Parallel()
	echotest.MakeAddr(t, filepath.Join(must(os.Getwd()), "Makefile"), echodBin)
}

func TestMakeWithoutPS(t *testing.T) {
	t.Parallel()
	echotest.MakeWithoutPS(t, filepath.Join(must(os.Getwd()), "Makefile"), echodBin, "stop", "ps")
}
