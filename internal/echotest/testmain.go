package echotest

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	// children holds the processes that Start and RunCmd started, until
	// they have been waited for: an interrupt kills them.
	children sync.Map // *os.Process -> struct{}

	// ending is held, for good, by whoever ends the process: Main once the
	// tests have run, or the signal handler. The other then waits forever.
	ending sync.Mutex
)

// Main is a test binary's TestMain: it makes one temporary root folder and
// sets TMPDIR to it, so that every t.TempDir(), and what the tests' programs
// put in their temporary folder, lives under it; build builds the binaries
// under test into dir, a folder in the root; then m runs.
//
// Ctrl-C sends SIGINT to the test binary, which would die at once, without
// its tests' cleanups, and leave their daemons running (they are in their own
// sessions, and get nothing) and the root behind. So at SIGINT, SIGTERM or
// SIGHUP (those not ignored at start) Main kills what the tests started (see
// tidy), removes the root, and dies of that signal; and exits 1 so if its
// parent, the go command, dies. It does the same once the tests have run,
// and then exits with their status.
func Main(m *testing.M, build func(dir string) error) {
	root, err := os.MkdirTemp("", "echod-test")
	if err == nil {
		root, err = filepath.EvalSymlinks(root) // as a process's /proc/PID/fd links name its files
	}
	if err == nil {
		err = os.Chmod(root, 0o755) // as /tmp lets a test's daemon that runs as nobody reach its files
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("TMPDIR", root)
	sigs := make(chan os.Signal, 1)
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		if !signal.Ignored(sig) { // Notify would stop ignoring it
			signal.Notify(sigs, sig)
		}
	}
	// Ctrl-C also ends at once what reads the output in a pipeline (make
	// test | less, or a summariser), and then the go command at its next
	// write, of SIGPIPE; this process would die so, at its own next one,
	// even while it tidies. So such a write fails instead, and once the parent
	// has gone, since nobody reads what the tests say, Main ends them too.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	orphaned := make(chan int)
	go func() {
		parent := os.Getppid()
		for os.Getppid() == parent {
			time.Sleep(100 * time.Millisecond)
		}
		orphaned <- parent
	}()
	go func() {
		var sig os.Signal
		why := ""
		select {
		case sig = <-sigs:
			why = sig.String()
		case parent := <-orphaned:
			why = fmt.Sprintf("the parent, pid %d, has gone", parent)
		}
		ending.Lock()
		fmt.Fprintf(os.Stderr, "echotest: %s: killing what the tests started, removing %s\n", why, root)
		if left := tidy(root); left != "" {
			fmt.Fprintln(os.Stderr, "echotest:", left)
		}
		if sig != nil {
			signal.Reset(sig) // and die of it, as without Main
			if self, err := os.FindProcess(os.Getpid()); err == nil {
				self.Signal(sig)
			}
			time.Sleep(time.Second)
		}
		os.Exit(1)
	}()

	code := 1
	dir := filepath.Join(root, "echod-bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	ending.Lock()
	if left := tidy(root); left != "" {
		fmt.Fprintln(os.Stderr, "echotest: after the tests:", left)
	}
	os.Exit(code)
}

// tidy kills the processes that the tests started and left running (see
// strays), waiting up to 5s until they have all exited, and then removes
// root. It returns what it did not do, or found left, or "".
func tidy(root string) string {
	killed := map[int]bool{}
	gone := Until(5*time.Second, func() bool {
		children.Range(func(p, _ any) bool {
			p.(*os.Process).Kill()
			return true
		})
		pids := strays(root)
		for _, pid := range pids {
			killed[pid] = true
			kill(pid)
		}
		return len(pids) == 0
	})
	var err error
	Until(time.Second, func() bool { err = os.RemoveAll(root); return err == nil })
	var left string
	if len(killed) > 0 {
		left = fmt.Sprintf("killed %d left running: %v; ", len(killed), slices.Sorted(maps.Keys(killed)))
	}
	if !gone {
		left += fmt.Sprintf("still running after 5s: %v; ", strays(root))
	}
	if err != nil {
		left += err.Error()
	}
	return left
}

// startTracked starts cmd, to die with the test's process (dieWithTest), and
// records it until it has been waited for (call untrack then), for an
// interrupt to kill it.
func startTracked(t testing.TB, cmd *exec.Cmd) (untrack func()) {
	t.Helper()
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	children.Store(cmd.Process, struct{}{})
	return func() { children.Delete(cmd.Process) }
}
