package main

import (
	"echod/internal/echotest"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// interruptEnv makes TestInterruptedRun run, as the test run that
// TestInterrupt interrupts; "orphan" has it leave its daemons to others.
const interruptEnv = "ECHOD_TEST_INTERRUPTED"

// TestInterrupt runs this test binary as make test does, on a test that
// starts a daemon and waits, and sends it SIGINT, as Ctrl-C does: the daemon
// must die with the run, and the run's temporary root must go (see
// echotest.Main). The run finds its daemon among its own processes, as a
// subreaper, or else ("orphan") by the PID file that it holds open. In
// "parent gone", the run's parent (the go command, here a shell) dies
// instead, as it does of SIGPIPE once Ctrl-C has ended what reads its
// output, and the run must end and tidy alike.
func TestInterrupt(t *testing.T) {
	t.Parallel() // it waits, mostly for the runs' builds
	for _, mode := range []string{"subreaper", "orphan", "parent gone"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir() // the run's TMPDIR
			var run, daemon int
			t.Cleanup(func() { // this process, a subreaper, inherits them when their parents die: reap them
				for _, pid := range []int{run, daemon} {
					echotest.Until(2*time.Second, func() bool {
						wpid, err := syscall.Wait4(pid, nil, syscall.WNOHANG, nil)
						return pid == 0 || wpid == pid || err != nil
					})
				}
			})
			echotest.CleanupDaemons(t, tmp) // what a failure leaves: the run, its daemon
			test, _ := os.Executable()
			cmd := exec.Command("sh", "-c", `"$@"; echo "run status $?"`, "sh", test, "-test.run", "^TestInterruptedRun$")
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp, interruptEnv+"="+mode)
			var out, errOut echotest.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() {
				if st := echotest.ProcStat(run); run != 0 && st != nil && (st[1] == strconv.Itoa(os.Getpid()) || st[1] == strconv.Itoa(cmd.Process.Pid)) {
					syscall.Kill(run, syscall.SIGKILL) // still ours, the shell's child or this process's
				}
				cmd.Process.Kill()
				<-done
			})
			if !echotest.Until(30*time.Second, func() bool {
				_, err := fmt.Sscanf(out.String(), "run pid %d, daemon pid %d", &run, &daemon)
				return err == nil
			}) {
				t.Fatalf("the run started no daemon:\n%s%s", out.String(), errOut.String())
			}

			if mode == "parent gone" {
				cmd.Process.Kill()
			} else {
				syscall.Kill(run, syscall.SIGINT)
			}
			if !echotest.Until(10*time.Second, func() bool { return !echotest.Alive(run) }) {
				t.Fatalf("the run still runs 10s on:\n%s%s", out.String(), errOut.String())
			}
			<-done
			if want := "\nrun status 130\n"; mode != "parent gone" && !strings.HasSuffix(out.String(), want) {
				t.Errorf("the run's end: %q, want death by SIGINT (%q), as without a handler", out.String(), want[1:])
			}
			if !echotest.Until(2*time.Second, func() bool { return !echotest.Alive(daemon) }) {
				t.Errorf("its daemon, pid %d, still runs", daemon)
			}
			if files, _ := os.ReadDir(tmp); len(files) > 0 {
				var names []string
				for _, f := range files {
					names = append(names, f.Name())
				}
				t.Errorf("the run left in its TMPDIR: %s", strings.Join(names, " "))
			}
			if t.Failed() {
				t.Logf("its output:\n%s%s", out.String(), errOut.String())
			}
		})
	}
}

// TestInterruptedRun is the run that TestInterrupt interrupts: it starts a
// daemon, says its pid, and waits.
func TestInterruptedRun(t *testing.T) {
	mode := os.Getenv(interruptEnv)
	if mode == "" {
		t.Skip("TestInterrupt runs it")
	}
	if mode == "orphan" { // its daemon goes to another subreaper, or init
		syscall.RawSyscall(syscall.SYS_PRCTL, 36, 0, 0) // 36: PR_SET_CHILD_SUBREAPER
	}
	pid, _ := echotest.StartDaemon(t, t.TempDir(), echodBin)
	fmt.Printf("run pid %d, daemon pid %d\n", os.Getpid(), pid)
	time.Sleep(time.Minute)
}
