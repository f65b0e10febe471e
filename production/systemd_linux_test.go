package main

import (
	"echod/internal/echotest"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// notice is one sd_notify datagram, with the pid that sent it.
type notice struct {
	pid   int
	state string
}

// notifySocket is a test-owned receiver of sd_notify(3) datagrams, as
// systemd's is: it learns each sender's pid from SCM_CREDENTIALS.
type notifySocket struct {
	addr string
	conn *net.UnixConn
}

func listenNotify(t *testing.T, addr string) *notifySocket {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw, _ := conn.SyscallConn()
	raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1) })
	return &notifySocket{addr, conn}
}

// next returns the next datagram, waiting up to d for it.
func (n *notifySocket) next(t *testing.T, d time.Duration) notice {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, 1024)
	n.conn.SetReadDeadline(time.Now().Add(d))
	nb, noob, _, _, err := n.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no sd_notify message within %v: %v", d, err)
	}
	msg := notice{state: string(buf[:nb])}
	if scm, err := syscall.ParseSocketControlMessage(oob[:noob]); err == nil && len(scm) > 0 {
		if cred, err := syscall.ParseUnixCredentials(&scm[0]); err == nil {
			msg.pid = int(cred.Pid)
		}
	}
	return msg
}

// expect reads the next datagram and checks its sender and contents.
func (n *notifySocket) expect(t *testing.T, d time.Duration, pid int, state string) {
	t.Helper()
	if got := n.next(t, d); got.pid != pid || got.state != state {
		t.Errorf("sd_notify from pid %d: %q; want %q from pid %d", got.pid, got.state, state, pid)
	}
}

// TestNotifyForeground receives echod's sd_notify messages at an abstract
// address and at a path: READY=1 once a client can connect, STOPPING=1 at
// SIGTERM.
func TestNotifyForeground(t *testing.T) {
	for _, addr := range []string{fmt.Sprintf("@echod-test-%d", rand.Uint64()), filepath.Join(t.TempDir(), "notify")} {
		t.Run(addr[:1], func(t *testing.T) {
			n := listenNotify(t, addr)
			cmd := exec.Command(echodBin, "-foreground", "-addr", "127.0.0.1:0")
			cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+addr)
			s := echotest.Start(t, cmd)
			pid := s.Cmd.Process.Pid
			n.expect(t, 10*time.Second, pid, fmt.Sprintf("READY=1\nMAINPID=%d", pid))
			echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("ready means serving"))
			s.Stop(t, 5*time.Second)
			n.expect(t, time.Second, pid, "STOPPING=1")
		})
	}
}

// monotonicUsec is CLOCK_MONOTONIC in µs, as RELOADING=1 carries it.
func monotonicUsec() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0) // 1: CLOCK_MONOTONIC
	return ts.Nano() / 1e3
}

// TestNotifyDaemon follows the messages of a daemon's life: READY=1 from
// the daemon, before its parent exits, with MAINPID, since the daemon is not
// the process the service manager started; at a reload, RELOADING=1 with the
// monotonic clock, then READY=1 from the new daemon; at a failed reload,
// READY=1 again from the old one.
func TestNotifyDaemon(t *testing.T) {
	dir := t.TempDir()
	n := listenNotify(t, fmt.Sprintf("@echod-test-%d", rand.Uint64()))
	t.Setenv("NOTIFY_SOCKET", n.addr)
	pid, _ := echotest.StartDaemon(t, dir, installEchod(t, dir, echodBin, 0o755))
	n.expect(t, 100*time.Millisecond, pid, fmt.Sprintf("READY=1\nMAINPID=%d", pid)) // already queued

	before := monotonicUsec()
	syscall.Kill(pid, syscall.SIGHUP)
	got := n.next(t, 10*time.Second)
	var usec int64
	if _, err := fmt.Sscanf(got.state, "RELOADING=1\nMONOTONIC_USEC=%d", &usec); err != nil || got.pid != pid || usec < before || usec > monotonicUsec() {
		t.Errorf("sd_notify from pid %d: %q; want RELOADING=1 and MONOTONIC_USEC from %d to now", got.pid, got.state, before)
	}
	next := awaitReload(t, dir, pid)
	n.expect(t, 10*time.Second, next, fmt.Sprintf("READY=1\nMAINPID=%d", next))

	installScript(t, dir, "#!/bin/sh\nexit 3\n")
	syscall.Kill(next, syscall.SIGHUP)
	if got := n.next(t, 10*time.Second); got.pid != next || !strings.HasPrefix(got.state, "RELOADING=1\n") {
		t.Errorf("sd_notify from pid %d: %q; want RELOADING=1 from %d", got.pid, got.state, next)
	}
	n.expect(t, 10*time.Second, next, fmt.Sprintf("READY=1\nMAINPID=%d", next))
	syscall.Kill(next, syscall.SIGTERM)
	n.expect(t, 10*time.Second, next, "STOPPING=1")
}

// TestNotifyFails points NOTIFY_SOCKET at nothing: echod serves anyway, and
// logs the failure once.
func TestNotifyFails(t *testing.T) {
	cmd := exec.Command(echodBin, "-foreground", "-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=@echod-test-nobody-listens")
	s := echotest.Start(t, cmd)
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("serving without a service manager"))
	s.Stop(t, 5*time.Second)
	if n := strings.Count(s.Log(), "msg=sd_notify"); n != 1 {
		t.Errorf("%d sd_notify failures logged, want 1:\n%s", n, s.Log())
	}
}

// fullNotify is a notify socket that nobody reads, its queue full: each
// sd_notify to it fails at once (EAGAIN).
func fullNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := listenNotify(t, fmt.Sprintf("@echod-test-%d", rand.Uint64()))
	fill, err := net.Dial("unixgram", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fill.Close() })
	for i := 0; ; i++ {
		fill.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := fill.Write([]byte("STATUS=filling")); err != nil {
			return n
		} else if i == 100000 {
			t.Fatal("the notify socket's queue never filled")
		}
	}
}

// TestNotifyBlocked points NOTIFY_SOCKET at a manager that stopped reading,
// its queue full: echod starts and serves without waiting on it, logs the
// failure once, and still stops at SIGTERM.
func TestNotifyBlocked(t *testing.T) {
	t.Parallel()
	n := fullNotify(t)
	cmd := exec.Command(echodBin, "-foreground", "-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.addr)
	begin := time.Now()
	s := echotest.Start(t, cmd)
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("start-up took %v", d)
	}
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("serving, though the manager does not read"))
	s.Stop(t, 5*time.Second)
	if got := strings.Count(s.Log(), "msg=sd_notify"); got != 1 {
		t.Errorf("%d sd_notify failures logged, want 1:\n%s", got, s.Log())
	}
}

// freePort returns a loopback address that nothing listens on right now.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStartStopDaemonNotify starts echod -foreground with dpkg's
// start-stop-daemon, which waits for READY=1: it returns 0 only once echod
// serves, and fails when the port is taken, since READY=1 never comes.
func TestStartStopDaemonNotify(t *testing.T) {
	t.Parallel() // it mostly waits
	echotest.NeedTool(t, "start-stop-daemon", "dpkg")
	dir := t.TempDir()
	echotest.CleanupDaemons(t, dir)
	ssd := func(addr, timeout string) (string, int) {
		cmd := exec.Command("start-stop-daemon", "--start", "--background", "--notify-await", "--notify-timeout", timeout,
			"--pidfile", filepath.Join(dir, "ssd.pid"), "--make-pidfile", "--exec", echodBin, "--",
			"-foreground", "-addr", addr, "-log", filepath.Join(dir, "echod.log"))
		_, errOut, code := echotest.RunCmd(t, cmd)
		return errOut, code
	}
	addr := freePort(t)
	if errOut, code := ssd(addr, "10"); code != 0 {
		t.Fatalf("start-stop-daemon: exit %d, %s", code, errOut)
	}
	echotest.MustEcho(t, echotest.Dial(t, addr), []byte("served when start-stop-daemon returned"))
	os.Remove(filepath.Join(dir, "ssd.pid"))
	if errOut, code := ssd(addr, "2"); code == 0 { // it notices only the timeout, not echod's exit
		t.Errorf("start-stop-daemon on a taken port: exit 0, %s", errOut)
	}
}

// activate runs echod (args) under systemd-socket-activate, listening on
// listen, which starts echod at the first connection and passes it the
// socket as fd 3.
func activate(t *testing.T, dir string, opts, listen []string, args ...string) *exec.Cmd {
	echotest.NeedTool(t, "systemd-socket-activate", "systemd")
	echotest.CleanupDaemons(t, dir)
	argv := opts
	for _, l := range listen {
		argv = append(argv, "-l", l)
	}
	cmd := exec.Command("systemd-socket-activate", append(append(argv, echodBin), args...)...)
	cmd.Dir = dir
	return cmd
}

// dialActivator connects to addr once systemd-socket-activate listens there:
// the connection that starts echod.
func dialActivator(t *testing.T, addr string) *net.TCPConn {
	var c net.Conn
	echotest.Poll(t, 5*time.Second, "systemd-socket-activate does not listen", func() bool {
		var err error
		c, err = net.Dial("tcp", addr)
		return err == nil
	})
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// TestSocketActivation has systemd-socket-activate bind a port and start
// echod at the first connection: echod serves that connection on the port it
// was given, and never binds its -addr.
func TestSocketActivation(t *testing.T) {
	t.Parallel() // it mostly waits
	dir := t.TempDir()
	port, other := freePort(t), freePort(t)
	cmd := activate(t, dir, nil, []string{port}, "-foreground", "-addr", other)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	c := dialActivator(t, port)
	echotest.MustEcho(t, c, []byte("the first connection, in the backlog while echod started"))
	if nc, err := net.Dial("tcp", other); err == nil {
		nc.Close()
		t.Errorf("echod bound -addr %s too", other)
	}
	cmd.Process.Signal(syscall.SIGTERM) // echod: systemd-socket-activate became it
	cmd.Wait()
	if want := "msg=start addr=" + port; !strings.Contains(errOut.String(), want) {
		t.Errorf("no %q in the log:\n%s", want, errOut.String())
	}
}

// TestSocketActivationDaemon activates echod in daemon mode: the first
// process takes the socket and hands it to the daemon, which keeps it
// across a reload.
func TestSocketActivationDaemon(t *testing.T) {
	t.Parallel() // it mostly waits
	dir := t.TempDir()
	port := freePort(t)
	cmd := activate(t, dir, nil, []string{port})
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	c := dialActivator(t, port)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the activated parent: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the activated parent did not exit")
	}
	echotest.MustEcho(t, c, []byte("served by the daemon"))
	pid := echotest.ReadPID(t, filepath.Join(dir, "echod.pid"))
	syscall.Kill(pid, syscall.SIGHUP)
	next := awaitReload(t, dir, pid)
	echotest.WaitGone(t, pid)
	assertOnly(t, dir, next, port)
}

// TestSocketActivationRefused gives echod two sockets, a UDP socket, and an
// accepted connection (Accept=yes in a .socket unit): it takes exactly one
// listening TCP socket, and says so.
func TestSocketActivationRefused(t *testing.T) {
	for _, tc := range []struct {
		name, network string
		opts, listen  []string
		want          string
	}{
		{"two sockets", "tcp", nil, []string{freePort(t), freePort(t)}, "echod: LISTEN_FDS=2: echod takes exactly one socket\n"},
		{"udp", "udp", []string{"--datagram"}, []string{freePort(t)}, "echod: fd 3 is not a listening TCP socket\n"},
		{"accepted connection", "tcp", []string{"--accept"}, []string{freePort(t)}, "echod: fd 3 is not a listening TCP socket\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := activate(t, t.TempDir(), tc.opts, tc.listen, "-foreground")
			var errOut echotest.SyncBuffer
			cmd.Stderr = &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() { cmd.Process.Kill(); <-done }()
			echotest.Poll(t, 10*time.Second, "echod did not refuse", func() bool {
				if c, err := net.Dial(tc.network, tc.listen[0]); err == nil { // wakes systemd-socket-activate, once it listens
					c.Write([]byte("wake up"))
					c.Close()
				}
				return strings.Contains(errOut.String(), tc.want)
			})
			if tc.opts == nil || tc.opts[0] != "--accept" { // then echod is the process: it exits 1
				select {
				case err := <-done:
					if echotest.ExitCode(err) != 1 {
						t.Errorf("exit %v, want 1", err)
					}
					done <- err
				case <-time.After(5 * time.Second):
					t.Error("echod did not exit")
				}
			}
		})
	}
}

// TestListenPIDForAnother passes a socket with LISTEN_PID naming another
// process, as a parent's leftover environment would: echod ignores it and
// binds -addr.
func TestListenPIDForAnother(t *testing.T) {
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	f, _ := other.(*net.TCPListener).File()
	defer f.Close()
	cmd := exec.Command(echodBin, "-foreground", "-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "LISTEN_PID="+strconv.Itoa(os.Getpid()), "LISTEN_FDS=1")
	cmd.ExtraFiles = []*os.File{f}
	s := echotest.Start(t, cmd)
	if s.Addr == other.Addr().String() {
		t.Fatalf("echod took the socket meant for pid %d", os.Getpid())
	}
	echotest.MustEcho(t, echotest.Dial(t, s.Addr), []byte("bound its own"))
}

var withSystemd = flag.Bool("systemd", false, "run TestSystemd, which boots systemd in a container (make test-systemd)")

// container is a systemd booted by systemd-nspawn, with a network of its
// own: its lo only.
type container struct {
	leader int // the container's PID 1, seen from here
}

// sh runs a shell command inside the container, in all its namespaces.
func (c *container) sh(t *testing.T, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(c.leader), "-a", "sh", "-c", script)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// must runs script in the container and fails the test if it fails.
func (c *container) must(t *testing.T, script string) string {
	t.Helper()
	out, err := c.sh(t, script)
	if err != nil {
		t.Fatalf("in the container, %s: %v\n%s", script, err, out)
	}
	return out
}

// netCmd is a command from this machine run in the container's network only.
func (c *container) netCmd(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-n"}, args...)...)
}

// show returns a unit's property, as systemctl show reports it.
func (c *container) show(t *testing.T, unit, prop string) string {
	t.Helper()
	return c.must(t, "systemctl show -P "+prop+" "+unit)
}

// systemdRoot returns a root file system of Debian suite with systemd,
// made once with debootstrap (about a minute) and kept for later runs.
func systemdRoot(t *testing.T, suite string) string {
	root := "/var/cache/echod-test/" + suite
	if _, err := os.Stat(filepath.Join(root, "usr/lib/systemd/systemd")); err == nil {
		return root
	}
	mirror := "http://deb.debian.org/debian"
	sources, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range sources { // deb822: "URIs: http://…"
		b, _ := os.ReadFile(f)
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "URIs:" && strings.HasSuffix(f[1], "/debian") {
				mirror = f[1]
			}
		}
	}
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	os.MkdirAll(filepath.Dir(root), 0o755)
	t.Logf("debootstrap %s from %s into %s", suite, mirror, root)
	out, err := exec.Command("debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,procps", suite, tmp, mirror).CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, out[max(0, len(out)-2000):])
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	return root
}

// bootSystemd boots systemd as PID 1 in a container with nspawn. A launcher
// first moves itself into cgroups of its own, so that nspawn's land there
// and can be removed afterwards. The container's root is the cached file
// system under a tmpfs overlay, so nothing it writes is kept.
func bootSystemd(t *testing.T, suite string) *container {
	unavailable := func(format string, args ...any) { // asked for by name, it fails, unless told a skip is fine
		if os.Getenv("ECHOD_SYSTEMD_SKIP_OK") == "" {
			t.Fatalf(format+"; make test-systemd SKIP_OK=1 lets it skip", args...)
		}
		t.Skipf(format, args...)
	}
	if os.Getuid() != 0 {
		unavailable("TestSystemd needs root")
	}
	for _, tool := range [][2]string{{"systemd-nspawn", "systemd-container"}, {"debootstrap", "debootstrap"}, {"nsenter", "util-linux"}} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			unavailable("needs %s (apt-get install %s)", tool[0], tool[1])
		}
	}
	root := systemdRoot(t, suite)
	name := fmt.Sprintf("echod-test-%d", os.Getpid())
	var cgroups []string
	for _, h := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err == nil {
			cgroups = append(cgroups, filepath.Join(h, name))
			if h == "/sys/fs/cgroup" {
				break // a cgroup2 root
			}
		}
	}
	launcher := `for g in "$@"; do mkdir "$g" && echo $$ > "$g/cgroup.procs" || exit 1; done
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec systemd-nspawn -D ` + root + ` --volatile=overlay -b --register=no --keep-unit --private-network --console=passive -M echod`
	nspawn := exec.Command("bash", append([]string{"-c", launcher, "launcher"}, cgroups...)...)
	var console strings.Builder
	nspawn.Stdout, nspawn.Stderr = &console, &console
	if err := nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- nspawn.Wait() }()
	c := &container{}
	t.Cleanup(func() {
		if c.leader != 0 {
			c.sh(t, "systemctl poweroff --no-block")
		}
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("the container did not power off; killing it")
			syscall.Kill(c.leader, syscall.SIGKILL)
			nspawn.Process.Kill()
			<-exited
		}
		for _, g := range cgroups { // the deepest first
			var dirs []string
			filepath.WalkDir(g, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := os.Remove(dirs[i]); err != nil {
					t.Errorf("cgroup left: %v", err)
				}
			}
		}
		if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), root) {
			t.Errorf("mounts of %s left", root)
		}
	})
	echotest.Poll(t, 10*time.Second, "no systemd in the container:\n"+console.String(), func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", nspawn.Process.Pid, nspawn.Process.Pid))
		c.leader, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.leader))
		return string(comm) == "systemd\n"
	})
	for end := time.Now().Add(30 * time.Second); ; {
		state, _ := c.sh(t, "systemctl is-system-running --wait")
		if state == "running" || state == "degraded" {
			t.Logf("systemd is %s in the container (pid %d here)", state, c.leader)
			break
		}
		if time.Now().After(end) {
			t.Fatalf("systemd is %q after 30s", state)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// unitFiles returns the files in units/ that an administrator installs, by the path each
// names in its first line ("# /etc/systemd/system/NAME", "# /etc/logrotate.d/echod"):
// the units README.md shows, byte for byte (TestUnitsShown).
func unitFiles(t *testing.T) map[string]string {
	entries, err := os.ReadDir("units")
	if err != nil {
		t.Fatal(err)
	}
	units := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("units", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if !strings.HasPrefix(first, "# /etc/") || filepath.Base(first) != strings.TrimSuffix(e.Name(), ".logrotate") {
			t.Fatalf("units/%s: its first line must name where it is installed, as \"# /etc/systemd/system/%[1]s\"; it is %q", e.Name(), first)
		}
		units[strings.TrimPrefix(first, "# ")] = string(b)
	}
	return units
}

// TestUnitsShown keeps production's READMEs and units/ in step: each code block that
// names an installed file in its first line ("# /etc/...") is that file of units/,
// byte for byte, and each file of units/ is shown once in each README.
func TestUnitsShown(t *testing.T) {
	files := unitFiles(t)
	if len(files) < 5 {
		t.Fatalf("units/ holds %d files; want the 5 units at least", len(files))
	}
	for _, readme := range []string{"README.md", "README.zh-CN.md"} {
		b, err := os.ReadFile(readme)
		if err != nil {
			t.Fatal(err)
		}
		shown := map[string]int{}
		for _, block := range echotest.CodeBlocks(string(b)) {
			first, _, _ := strings.Cut(block, "\n")
			if !strings.HasPrefix(first, "# /etc/") {
				continue
			}
			path := strings.TrimPrefix(first, "# ")
			shown[path]++
			if file, ok := files[path]; !ok {
				t.Errorf("%s shows %s, which units/ does not hold", readme, path)
			} else if block != file {
				t.Errorf("%s shows %s otherwise than units/ holds it:\n%s\nunits/:\n%s", readme, path, block, file)
			}
		}
		for path := range files {
			if shown[path] != 1 {
				t.Errorf("%s shows %s %d times; want once", readme, path, shown[path])
			}
		}
	}
}

// TestSystemd runs echod under the systemd of Debian 12 (252) and of Debian
// 13 (257), each in a container, with each unit of units/ (which README.md
// shows), hardening and all.
func TestSystemd(t *testing.T) {
	if !*withSystemd {
		t.Skip("boots a container: make test-systemd")
	}
	for _, suite := range []string{"bookworm", "trixie"} {
		t.Run(suite, func(t *testing.T) { testSystemd(t, suite) })
	}
}

// testSystemd is TestSystemd under one suite's systemd: start, reload under
// clients, an upgrade in place, log rotation, a reload that fails, stop,
// a new daemon killed after it said ready, socket activation, and a start
// that fails.
func testSystemd(t *testing.T, suite string) {
	units := unitFiles(t)
	c := bootSystemd(t, suite)
	t.Logf("%s: %s", suite, c.must(t, "systemctl --version | head -1"))
	// installBin puts bin at path in the container as a new file, as mv does.
	installBin := func(t *testing.T, bin, path string) {
		t.Helper()
		f, err := os.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command("nsenter", "-t", strconv.Itoa(c.leader), "-a", "sh", "-c", "cat > "+path+".new && chmod 755 "+path+".new && mv "+path+".new "+path)
		cmd.Stdin = f
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("installing %s: %v %s", path, err, out)
		}
	}
	installBin(t, plainBin, "/usr/local/bin/echod")
	installBin(t, clientBin, "/usr/local/bin/client")
	install := func(t *testing.T, names ...string) {
		t.Helper()
		for _, name := range names {
			path := "/etc/systemd/system/" + name
			unit, ok := units[path]
			if !ok {
				t.Fatalf("units/ holds no %s", path)
			}
			c.must(t, fmt.Sprintf("cat > %s <<'EOF'\n%sEOF", path, unit))
			t.Cleanup(func() {
				c.sh(t, "systemctl stop "+name+"; rm "+path+"; systemctl daemon-reload; systemctl reset-failed")
			})
		}
		c.must(t, "systemctl daemon-reload")
	}
	echo := func(t *testing.T, line string) {
		t.Helper()
		cmd := c.netCmd(clientBin, "-retries", "0", "-timeout", "5s", "127.0.0.1", "8080")
		cmd.Stdin = strings.NewReader(line + "\n")
		if out, err := cmd.CombinedOutput(); err != nil || string(out) != line+"\n" {
			t.Fatalf("client: %v, %q", err, out)
		}
	}
	// reloadUnderClients reloads unit while a loop of clients runs in the
	// container's network, each on a new connection, none allowed to fail,
	// and returns the new MainPID.
	reloadUnderClients := func(t *testing.T, unit string) int {
		t.Helper()
		old := c.show(t, unit, "MainPID")
		stop := filepath.Join(t.TempDir(), "stop")
		loop := c.netCmd("bash", "-c", `n=0; until [ -e "$1" ] || [ $n -ge 20000 ]; do n=$((n+1)); echo $n | "$0" -retries 0 -timeout 5s 127.0.0.1 8080 >/dev/null || exit 1; done; echo $n`, clientBin, stop)
		var loopOut strings.Builder
		loop.Stdout, loop.Stderr = &loopOut, &loopOut
		if err := loop.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // clients before the reload
		c.must(t, "systemctl reload "+unit)
		var pid string
		echotest.Poll(t, 15*time.Second, "MainPID did not change", func() bool { pid = c.show(t, unit, "MainPID"); return pid != old && pid != "0" })
		time.Sleep(200 * time.Millisecond) // and after it
		os.WriteFile(stop, nil, 0o644)
		if err := loop.Wait(); err != nil {
			t.Fatalf("a client failed during the reload: %v\n%s", err, loopOut.String())
		}
		t.Logf("reload: MainPID %s -> %s; %s clients, none failed", old, pid, strings.TrimSpace(loopOut.String()))
		if state := c.show(t, unit, "ActiveState"); state != "active" {
			t.Errorf("%s is %s after the reload", unit, state)
		}
		n, _ := strconv.Atoi(pid)
		return n
	}

	t.Run("forking", func(t *testing.T) {
		install(t, "echod-daemon.service")
		c.must(t, "systemctl start echod-daemon")
		echo(t, "served when systemctl start returned")
		// The first echod's stdout is the journal's: its one line names the daemon.
		line := "echod: daemon pid " + c.show(t, "echod-daemon", "MainPID") + " listening on 127.0.0.1:8080"
		echotest.Poll(t, 5*time.Second, "the journal has no "+line, func() bool {
			journal, _ := c.sh(t, "journalctl --no-pager -u echod-daemon")
			return strings.Contains(journal, line)
		})
		pidfile := "/run/echod/echod.pid"
		if main, inFile := c.show(t, "echod-daemon", "MainPID"), c.must(t, "cat "+pidfile); main != inFile {
			t.Errorf("MainPID %s, PID file %s", main, inFile)
		}
		for range 2 {
			next := reloadUnderClients(t, "echod-daemon")
			if inFile := c.must(t, "cat "+pidfile); inFile != strconv.Itoa(next) {
				t.Errorf("MainPID %d, PID file %s", next, inFile)
			}
		}
		// An upgrade in place: a new file at the path, then a reload runs it.
		installBin(t, plainBin, "/usr/local/bin/echod")
		next := reloadUnderClients(t, "echod-daemon")
		if running, onDisk := c.must(t, fmt.Sprintf("stat -L -c %%i /proc/%d/exe", next)), c.must(t, "stat -c %i /usr/local/bin/echod"); running != onDisk {
			t.Errorf("after the upgrade, MainPID %d runs inode %s, not the new file's %s", next, running, onDisk)
		}
		// Log rotation, as logrotate's create and postrotate do it.
		c.must(t, "mv /var/log/echod/echod.log /var/log/echod/echod.log.1 && install -m 600 -o $(stat -c %u /var/log/echod/echod.log.1) /dev/null /var/log/echod/echod.log")
		next = reloadUnderClients(t, "echod-daemon")
		if log := c.must(t, "cat /var/log/echod/echod.log"); !strings.Contains(log, fmt.Sprintf("pid=%d", next)) || !strings.Contains(log, fmt.Sprintf("handed_over_to=%d", next)) {
			t.Errorf("after rotation, the new log holds:\n%s", log)
		}
		// A reload that fails: systemctl reload says so, and the old daemon serves on.
		c.must(t, "printf '#!/bin/sh\\nexit 3\\n' > /usr/local/bin/echod.new && chmod 755 /usr/local/bin/echod.new && mv /usr/local/bin/echod.new /usr/local/bin/echod")
		if out, err := c.sh(t, "systemctl reload echod-daemon"); err == nil {
			t.Errorf("systemctl reload of a broken binary succeeded: %s", out)
		}
		echo(t, "served on after a failed reload")
		if main := c.show(t, "echod-daemon", "MainPID"); main != strconv.Itoa(next) {
			t.Errorf("after a failed reload, MainPID %s, want %d", main, next)
		}
		installBin(t, plainBin, "/usr/local/bin/echod")
		c.must(t, "systemctl stop echod-daemon")
		if result := c.show(t, "echod-daemon", "Result"); result != "success" {
			t.Errorf("stop: Result=%s", result)
		}
		if log := c.must(t, "tail -1 /var/log/echod/echod.log"); !strings.Contains(log, "msg=stop") {
			t.Errorf("stop was not graceful; the log ends %q", log)
		}
		if state := c.show(t, "echod-daemon", "ActiveState"); state != "inactive" {
			t.Errorf("after stop: %s", state)
		}
		if out, err := c.sh(t, "test -e "+pidfile+" || ls /run/echod"); err == nil {
			t.Errorf("PID file left after stop: %s", out)
		}
	})
	// A stop in the middle of a move, which KillMode=control-group sends to both daemons at once, is one
	// graceful stop: the old daemon waits on a client that does not read, and a client of the new one,
	// sending a line every 0.5s, gets every line back past the old daemon's cut at -grace (5s).
	t.Run("stop during a reload", func(t *testing.T) {
		install(t, "echod-daemon.service")
		c.must(t, "systemctl start echod-daemon")
		lines := c.netCmd("bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/8080; n=0
			for i in $(seq 8); do echo line$i >&3 && read -t 3 r <&3 && [ "$r" = line$i ] || break; n=$i; echo $n; sleep 0.5; done`)
		got := new(echotest.SyncBuffer)
		lines.Stdout = got
		if err := lines.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lines.Process.Kill(); lines.Wait() })
		echotest.Poll(t, 10*time.Second, "no first echo", func() bool { return got.String() != "" })
		// A new binary that takes 3s to start: the stop lands while the old daemon waits for it, and
		// KillMode=control-group signals both. The old daemon ends the start and stops gracefully, once.
		installBin(t, plainBin, "/usr/local/bin/echod.real")
		c.must(t, `printf '#!/bin/sh\nsleep 3\nexec /usr/local/bin/echod.real "$@"\n' > /usr/local/bin/echod.new &&
			chmod 755 /usr/local/bin/echod.new && mv /usr/local/bin/echod.new /usr/local/bin/echod`)
		defer installBin(t, plainBin, "/usr/local/bin/echod")
		c.must(t, "systemctl reload --no-block echod-daemon")
		echotest.Poll(t, 10*time.Second, "the new daemon never started", func() bool {
			_, err := c.sh(t, "pgrep -x sleep")
			return err == nil
		})
		c.must(t, "systemctl stop echod-daemon")
		lines.Wait()
		if n := strings.Fields(got.String()); len(n) == 0 || n[len(n)-1] != "8" {
			t.Errorf("the client got %v of 8 lines back", n)
		}
		if result, state := c.show(t, "echod-daemon", "Result"), c.show(t, "echod-daemon", "ActiveState"); result != "success" || state != "inactive" {
			journal, _ := c.sh(t, "journalctl --no-pager -n 30 -u echod-daemon")
			t.Errorf("after stop: %s (%s)\n%s", state, result, journal)
		}
		if log := c.must(t, "cat /var/log/echod/echod.log"); !strings.Contains(log, "msg=stopping") || strings.Contains(log, "at once") {
			t.Errorf("want one graceful stop:\n%s", log)
		}
		if out, err := c.sh(t, "test -e /run/echod/echod.pid || ls /run/echod"); err == nil {
			t.Errorf("PID file left after stop: %s", out)
		}
	})
	// A new daemon that said ready IS the service: if it dies then, that is a crash like any other, and
	// Restart= brings the unit back (a new MainPID, active, NRestarts grown, serving).
	t.Run("new daemon dies", func(t *testing.T) {
		for _, unit := range []string{"echod-daemon", "echod-daemon-notify"} {
			t.Run(unit, func(t *testing.T) {
				install(t, unit+".service")
				c.must(t, "systemctl start "+unit)
				defer func() {
					if t.Failed() {
						journal, _ := c.sh(t, "journalctl --no-pager -n 30 -u "+unit+"; tail -8 /var/log/echod/echod.log")
						t.Logf("%s", journal)
					}
				}()
				old := c.show(t, unit, "MainPID")
				restarts, _ := strconv.Atoi(c.show(t, unit, "NRestarts"))
				c.must(t, "systemctl reload "+unit)
				echotest.Poll(t, 15*time.Second, "the old daemon did not go", func() bool {
					_, err := c.sh(t, "kill -0 "+old)
					return err != nil
				})
				next := c.must(t, "cat /run/echod/echod.pid")
				if next == old {
					t.Fatalf("the PID file still names the old daemon, %s", old)
				}
				c.must(t, "kill -9 "+next)
				begin := time.Now()
				var main string
				echotest.Poll(t, 5*time.Second, fmt.Sprintf("%s did not come back after its new daemon %s died", unit, next), func() bool {
					main = c.show(t, unit, "MainPID")
					n, _ := strconv.Atoi(c.show(t, unit, "NRestarts"))
					return main != "0" && main != old && main != next && n > restarts && c.show(t, unit, "ActiveState") == "active"
				})
				echo(t, "served again after the new daemon died")
				t.Logf("new daemon %s killed: MainPID %s -> %s, serving again in %v", next, old, main, time.Since(begin).Round(time.Millisecond))
			})
		}
	})
	t.Run("notify", func(t *testing.T) {
		install(t, "echod.service")
		c.must(t, "systemctl start echod")
		echo(t, "active means serving")
		c.must(t, "systemctl stop echod")
		if result := c.show(t, "echod", "Result"); result != "success" {
			t.Errorf("stop: Result=%s", result)
		}
	})
	t.Run("notify daemon", func(t *testing.T) {
		install(t, "echod-daemon-notify.service")
		c.must(t, "systemctl start echod-daemon-notify")
		echo(t, "the daemon told systemd")
		reloadUnderClients(t, "echod-daemon-notify")
		c.must(t, "systemctl stop echod-daemon-notify")
		if log := c.must(t, "tail -1 /var/log/echod/echod.log"); !strings.Contains(log, "msg=stop") {
			t.Errorf("stop was not graceful; the log ends %q", log)
		}
		if result := c.show(t, "echod-daemon-notify", "Result"); result != "success" {
			journal, _ := c.sh(t, "journalctl --no-pager -n 30 -u echod-daemon-notify; tail /var/log/echod/echod.log")
			t.Errorf("stop: Result=%s\n%s", result, journal)
		}
	})
	t.Run("socket", func(t *testing.T) {
		install(t, "echod-activated.socket", "echod-activated.service")
		c.must(t, "systemctl start echod-activated.socket")
		if state := c.show(t, "echod-activated.service", "ActiveState"); state != "inactive" {
			t.Fatalf("the service is %s before any client", state)
		}
		echo(t, "the first client starts echod")
		if state := c.show(t, "echod-activated.service", "ActiveState"); state != "active" {
			t.Errorf("the service is %s after a client", state)
		}
		c.must(t, "systemctl stop echod-activated.service echod-activated.socket")
	})
	t.Run("start fails", func(t *testing.T) {
		install(t, "echod.service", "echod-daemon.service")
		c.must(t, "systemctl start echod-daemon") // takes 127.0.0.1:8080
		if out, err := c.sh(t, "systemctl start echod"); err == nil {
			t.Fatalf("the second start on the same port worked: %s", out)
		}
		status, _ := c.sh(t, "systemctl status --no-pager echod")
		if !strings.Contains(status, "echod: listen tcp 127.0.0.1:8080: bind: address already in use") {
			t.Errorf("systemctl status does not show why:\n%s", status)
		}
	})
}

// TestUnitsExposure scores each service unit of units/ (which README.md shows) with
// systemd-analyze security, offline, as an administrator who pastes it
// would: none may be above 1.5.
func TestUnitsExposure(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("needs systemd-analyze (apt-get install systemd)")
	}
	dir := t.TempDir()
	scored := 0
	for path, unit := range unitFiles(t) {
		name := filepath.Base(path)
		if !strings.HasSuffix(name, ".service") {
			continue
		}
		os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644)
		cmd := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", name)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		var score float64
		if i := strings.Index(string(out), "Overall exposure level for "+name+": "); i < 0 {
			t.Errorf("%s: no score from systemd-analyze:\n%s", name, out)
		} else if fmt.Sscan(string(out[i+len("Overall exposure level for "+name+": "):]), &score); score > 1.5 {
			t.Errorf("%s: exposure %.1f, above 1.5:\n%s", name, score, out)
		} else {
			t.Logf("%s: exposure %.1f", name, score)
			scored++
		}
	}
	if scored != 4 {
		t.Errorf("%d services scored, want the 4 of units/", scored)
	}
}

// TestSystemdUnavailable runs TestSystemd where it cannot boot a container
// (no systemd-nspawn on PATH): asked for by name, it must fail and say what is
// missing, and skip only when told that a skip is fine.
func TestSystemdUnavailable(t *testing.T) {
	t.Parallel()
	test, _ := os.Executable()
	bin := t.TempDir() // a PATH with what the build needs, and no systemd-nspawn
	for _, tool := range []string{"go", "gcc", "cc", "as", "ld"} {
		if p, err := exec.LookPath(tool); err == nil {
			os.Symlink(p, filepath.Join(bin, tool))
		}
	}
	for _, skipOK := range []string{"", "1"} {
		cmd := exec.Command(test, "-test.run", "^TestSystemd$", "-test.v", "-systemd")
		cmd.Env = append(os.Environ(), "PATH="+bin, "ECHOD_SYSTEMD_SKIP_OK="+skipOK)
		out, _ := cmd.CombinedOutput()
		failed, skipped := strings.Contains(string(out), "--- FAIL"), strings.Contains(string(out), "--- SKIP")
		if named := strings.Contains(string(out), "needs systemd-nspawn") || strings.Contains(string(out), "needs root"); !named ||
			skipOK == "" && !failed || skipOK != "" && (failed || !skipped) {
			t.Errorf("ECHOD_SYSTEMD_SKIP_OK=%q: want a failure that names what is missing, or a skip if told so:\n%s", skipOK, out)
		}
	}
}
