package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// testdata/fixture.json is what go test -count=1 -json ./... printed in
// testdata/fixture (its times and most of a stack trace cut): package a
// passes a test, skips one, and fails a subtest; b does not build; c's test
// panics; d passes.
func checkSummary(t *testing.T, summary string) {
	t.Helper()
	for _, want := range []string{
		"SKIP TestNetcat (a): needs nc (apt-get install netcat-openbsd)\n", // the reason, not the t.Log before it
		"SKIP TestEcho/socat (a): needs socat (apt-get install socat)\n",   // a reason on two lines
		"    a_test.go:18: sent hello\n    a_test.go:19: got \"hellp\", want \"hello\"\n--- FAIL: TestEcho/bytes",
		"b/b_test.go:6:44: cannot use \"one\"",         // the compiler's error
		"FAIL\tfixture/b [build failed]\n",             // and the package's line
		"TestMain of c: starting\n--- FAIL: TestPanic", // a failed package's own output
		"panic: boom",
		"ok  \tfixture/d\t",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("the summary lacks %q", want)
		}
	}
	for _, hidden := range []string{"passing output, not shown", "TestMain of d", "looking for nc", "=== RUN", "--- SKIP"} {
		if strings.Contains(summary, hidden) {
			t.Errorf("the summary shows %q, from a test or package that did not fail", hidden)
		}
	}
	if i := strings.Index(summary, "SKIP"); i < strings.LastIndex(summary, "fixture/") {
		t.Errorf("the skips are not listed at the end:\n%s", summary)
	}
}

// summariseFailed summarises the events in file, which must not pass.
func summariseFailed(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var summary bytes.Buffer
	if summarise(f, &summary) {
		t.Errorf("summarise reported success for %s, where tests or builds failed", file)
	}
	return summary.String()
}

func TestSummarise(t *testing.T) { checkSummary(t, summariseFailed(t, "testdata/fixture.json")) }

// testdata/timeout.json is what go test -json -timeout 3s printed for a
// package of three parallel tests, TestB hung (most of the stack trace cut):
// test2json names the passed TestC for the timeout's panic, and TestC's pass
// event comes after it.
func TestSummariseTimeout(t *testing.T) {
	summary := summariseFailed(t, "testdata/timeout.json")
	for _, want := range []string{"panic: test timed out after 3s\n\trunning tests:\n\t\tTestB (3s)\n", "hang.TestB(", "FAIL\thang\t"} {
		if !strings.Contains(summary, want) {
			t.Errorf("the summary lacks %q:\n%s", want, summary)
		}
	}
	if strings.Contains(summary, "--- PASS") {
		t.Errorf("the summary shows a passed test's line:\n%s", summary)
	}
}

// TestRun checks that run's status is the command's as well as the tests':
// each command prints the fixture's lines for d, which passed.
func TestRun(t *testing.T) {
	for cmd, want := range map[string]int{
		"grep fixture/d testdata/fixture.json":             0,
		"grep fixture/d testdata/fixture.json; exit 3":     1, // go test failed, say with a panic after the tests
		"grep TestNetcat testdata/fixture.json":            1, // no test passed, one skipped
		"grep -e fixture/d -e build testdata/fixture.json": 1, // a build failed
	} {
		var stdout, stderr bytes.Buffer
		if got := run([]string{"sh", "-c", cmd}, &stdout, &stderr); got != want {
			t.Errorf("sh -c %q: status %d, want %d; it printed:\n%s%s", cmd, got, want, &stdout, &stderr)
		}
	}
}

// TestGoTest runs go test on the fixture for real: go's output is still what
// summarise expects.
func TestGoTest(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command in PATH")
	}
	var stdout, stderr bytes.Buffer
	if got := run([]string{"go", "-C", "testdata/fixture", "test", "-count=1", "-json", "./..."}, &stdout, &stderr); got != 1 {
		t.Errorf("status %d, want 1", got)
	}
	checkSummary(t, stdout.String())
	if stderr.Len() > 0 {
		t.Errorf("go test wrote to stderr:\n%s", &stderr)
	}
}

// TestSkipsByPackage: packages run side by side, and their skips come in
// mixed; the list groups them by package.
func TestSkipsByPackage(t *testing.T) {
	stream := `{"Action":"skip","Package":"m/z","Test":"TestZ1"}
{"Action":"skip","Package":"m/a","Test":"TestA"}
{"Action":"pass","Package":"m/z","Test":"TestZ2"}
{"Action":"skip","Package":"m/z","Test":"TestZ3"}
`
	var summary bytes.Buffer
	summarise(strings.NewReader(stream), &summary)
	want := "SKIP TestA (a): (no reason given)\nSKIP TestZ1 (z): (no reason given)\nSKIP TestZ3 (z): (no reason given)\n"
	if summary.String() != want {
		t.Errorf("summary:\n%swant:\n%s", &summary, want)
	}
}
