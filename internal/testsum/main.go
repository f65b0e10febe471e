// Command testsum runs go test -json (its arguments are the command; by
// default go test -json ./...) and prints what go test prints without -json:
// a line per package as it ends, and the whole output of each failed test or
// build. At the end it lists each skipped test with its reason. It exits 1 if
// the command fails, a test fails, or no test passed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run runs the command, its stdout summarised to stdout, and returns the
// exit status: the command's failure reaches summarise as a read error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"go", "test", "-json", "./..."}
	}
	r, w := io.Pipe()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = w, stderr
	go func() { w.CloseWithError(cmd.Run()) }()
	if summarise(r, stdout) {
		return 0
	}
	return 1
}

type line struct{ test, text string }

// summarise reads test2json events from r, writes the summary to w, and
// reports whether some test passed, none failed, and r read to its end.
func summarise(r io.Reader, w io.Writer) bool {
	output := map[string][]line{} // by package, but for the tests that passed or skipped
	var skips [][2]string         // package and line
	passed, failed := false, false
	sc := bufio.NewScanner(r)
	for sc.Buffer(nil, 16<<20); sc.Scan(); {
		var e struct{ Action, Package, Test, Output string }
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Fprintln(w, sc.Text())
			continue
		}
		pkg, o := e.Package, output[e.Package]
		switch {
		case e.Action == "build-output": // compiler errors
			fmt.Fprint(w, e.Output)
		case e.Action == "build-fail":
			failed = true
		case e.Action == "output":
			output[pkg] = append(o, line{e.Test, e.Output})
		case e.Test != "" && (e.Action == "pass" || e.Action == "skip"):
			passed = passed || e.Action == "pass"
			if e.Action == "skip" {
				short := pkg[strings.Index(pkg, "/")+1:] // echod/production as production
				skips = append(skips, [2]string{pkg, fmt.Sprintf("SKIP %s (%s): %s", e.Test, short, skipReason(o, e.Test))})
			}
			// Its lines end at its own --- PASS or --- SKIP: what test2json names it for after that is not its,
			// e.g. a timeout's panic, printed after a parallel test's last line and before its pass event.
			end := len(o)
			for i, l := range o {
				if l.test == e.Test && strings.HasPrefix(strings.TrimLeft(l.text, " "), "--- ") {
					end = i + 1
				}
			}
			output[pkg] = append(slices.DeleteFunc(o[:end:end], func(l line) bool { return l.test == e.Test }), o[end:]...)
		case e.Test != "": // a test failed (its package shows it), started...
		case e.Action == "fail": // the package
			failed = true
			for _, l := range o {
				if !strings.HasPrefix(l.text, "=== ") {
					fmt.Fprint(w, l.text)
				}
			}
		case (e.Action == "pass" || e.Action == "skip") && len(o) > 0: // its "ok" or "?" line
			fmt.Fprint(w, o[len(o)-1].text)
		}
	}
	if err := sc.Err(); err != nil && !failed { // else the summary says what failed
		fmt.Fprintf(w, "testsum: %v\n", err)
	}
	slices.SortStableFunc(skips, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	for _, s := range skips {
		fmt.Fprintln(w, s[1])
	}
	if !passed {
		fmt.Fprintln(w, "testsum: no test passed")
	}
	return passed && !failed && sc.Err() == nil
}

// fileLine begins each message of t.Log, t.Error, t.Skip and the like.
var fileLine = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// skipReason returns, on one line, the last message test logged: its t.Skip's.
func skipReason(output []line, test string) string {
	reason := "(no reason given)"
	for _, l := range output {
		switch {
		case l.test != test || strings.HasPrefix(l.text, "=== ") || strings.HasPrefix(l.text, "--- SKIP"):
		case fileLine.MatchString(l.text):
			reason = strings.TrimSpace(fileLine.ReplaceAllString(l.text, ""))
		default: // a message's next line
			reason += " " + strings.TrimSpace(l.text)
		}
	}
	return reason
}
