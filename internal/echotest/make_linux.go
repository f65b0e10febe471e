package echotest

import (
	"fmt"
	"net"
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
