package echotest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// MakeAddr checks ADDR= on a Makefile's targets: make run ADDR= names a PID file and a log by the port, and make
// ps and stop with the same ADDR= act on that daemon alone, not on the one at the default names beside it.
func MakeAddr(t *testing.T, makefile, exe string) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a free port, for the daemon below
	_, port, _ := net.SplitHostPort(addr)
	out, errOut, code := Make(t, makefile, dir, "-n", "run", "ADDR="+addr, "GO=true")
	if want := fmt.Sprintf(`-addr "%s" -log "echod-%s.log" -pidfile "echod-%[2]s.pid"`, addr, port); code != 0 ||
		!strings.Contains(out, want) {
		t.Errorf("make -n run ADDR=%s: exit %d, stdout %q, stderr %q; want %s", addr, code, out, errOut, want)
	}
	first, _ := StartDaemon(t, dir, exe) // at echod.pid and echod.log, as make run without ADDR= names them
	second, _ := StartDaemon(t, dir, exe, "-addr", addr, "-log", "echod-"+port+".log", "-pidfile", "echod-"+port+".pid")
	out, errOut, code = Make(t, makefile, dir, "ps", "ADDR="+addr)
	if fields := strings.Fields(out); code != 0 || !slices.Contains(fields, strconv.Itoa(second)) ||
		slices.Contains(fields, strconv.Itoa(first)) {
		t.Errorf("make ps ADDR=%s: exit %d, stdout %q, stderr %q; want pid %d, not %d", addr, code, out, errOut, second, first)
	}
	if _, errOut, code := Make(t, makefile, dir, "stop", "ADDR="+addr); code != 0 || Alive(second) || !Alive(first) {
		t.Errorf("make stop ADDR=%s: exit %d, stderr %q; pid %d alive %v (want false), %d alive %v (want true)",
			addr, code, errOut, second, Alive(second), first, Alive(first))
	}
}

// MakeWithoutPS runs each target, which signals or shows a daemon, with a PATH that has every tool but ps: it refuses
// in one line that names ps and its package, and the daemon runs on.
func MakeWithoutPS(t *testing.T, makefile, exe string, targets ...string) {
	bin := t.TempDir() // a link to each program on PATH, but ps
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.Name() != "ps" {
				os.Symlink(filepath.Join(d, e.Name()), filepath.Join(bin, e.Name())) // the first on PATH wins
			}
		}
	}
	dir := t.TempDir()
	pid, _ := StartDaemon(t, dir, exe)
	for _, target := range targets {
		cmd := makeCmd(t, makefile, dir, target, "GO=true")
		cmd.Env = append(os.Environ(), "PATH="+bin)
		_, errOut, code := RunCmd(t, cmd)
		if want := "echod: make " + target + " needs ps (apt-get install procps)\n"; code == 0 || !strings.HasPrefix(errOut, want) || !Alive(pid) { // then make's own line
			t.Errorf("make %s without ps: exit %d, stderr %q, daemon alive %v; want it refused: %q",
				target, code, errOut, Alive(pid), want)
		}
	}
}
