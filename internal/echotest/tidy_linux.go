package echotest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// strays lists the live processes that the tests started and left running:
// this process's descendants, which for a subreaper (see Adopt) include the
// daemons whose parents have exited, and each process that holds open a PID
// file under root, as a daemon holds its own (so also the one that a reload
// started, wherever its parent is). It looks at those processes only, never
// at the machine's, and at root only.
func strays(root string) []int {
	pids := Descendants(os.Getpid())
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(path, ".pid") {
			b, _ := os.ReadFile(path)
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && slices.Contains(openFiles(pid), path) { // the Makefiles' proof
				pids = append(pids, pid)
			}
		}
		return nil // on through what it cannot read
	})
	slices.Sort(pids)
	return slices.DeleteFunc(slices.Compact(pids), func(pid int) bool { return pid == os.Getpid() || !Alive(pid) })
}

func kill(pid int) { syscall.Kill(pid, syscall.SIGKILL) }

// dieWithTest has the kernel kill cmd's process when the thread that
// starts it exits (PR_SET_PDEATHSIG), which in Go, whose threads live on, is
// when the test's process dies: also where no handler runs, as when it is
// killed, or times out. A daemon that cmd forks is not concerned.
func dieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if cmd.SysProcAttr.Pdeathsig == 0 {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
}
