package main

import (
	"echod/internal/echotest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeParts returns what the two READMEs must share: the command lines
// of their code blocks ("$ ..." without a trailing comment), the unit files,
// and the tests named in the table of the C++'s flaws.
func readmeParts(t *testing.T, path string) (commands, units, tests []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	comment := regexp.MustCompile(`\s{2,}#.*$`)
	for _, block := range echotest.CodeBlocks(string(b)) {
		if strings.HasPrefix(block, "# /etc/systemd/system/") {
			units = append(units, block)
		}
		for line := range strings.Lines(block) {
			if strings.HasPrefix(line, "$ ") {
				commands = append(commands, comment.ReplaceAllString(strings.TrimSpace(line), ""))
			}
		}
	}
	var flaws string // the section whose "## " heading names the C++
	for _, section := range strings.Split(string(b), "\n## ")[1:] {
		if heading, _, _ := strings.Cut(section, "\n"); strings.Contains(heading, "C++") {
			flaws = section
		}
	}
	for line := range strings.Lines(flaws) {
		if strings.HasPrefix(line, "|") {
			tests = append(tests, regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z]+)`").FindAllString(line, -1)...)
		}
	}
	return commands, units, tests
}

// TestReadmesAgree keeps README.zh-CN.md in step with README.md: the same
// commands in the same order, the same units, and the same tests for the
// same flaws, each of which exists.
func TestReadmesAgree(t *testing.T) {
	enCmds, enUnits, enTests := readmeParts(t, "README.md")
	zhCmds, zhUnits, zhTests := readmeParts(t, "README.zh-CN.md")
	if len(enCmds) < 20 || len(enTests) < 20 || len(enUnits) != 5 {
		t.Fatalf("README.md: %d commands, %d units, %d tests named; the parser lost its way", len(enCmds), len(enUnits), len(enTests))
	}
	for i := range max(len(enCmds), len(zhCmds)) {
		if i >= len(enCmds) || i >= len(zhCmds) || enCmds[i] != zhCmds[i] {
			t.Fatalf("command %d differs:\nREADME.md:       %q\nREADME.zh-CN.md: %q", i+1, at(enCmds, i), at(zhCmds, i))
		}
	}
	if !slices.Equal(enUnits, zhUnits) {
		t.Error("the unit files differ between README.md and README.zh-CN.md")
	}
	if !slices.Equal(enTests, zhTests) {
		t.Errorf("the flaws tables name different tests:\nREADME.md:       %v\nREADME.zh-CN.md: %v", enTests, zhTests)
	}
	en, zh := string(must(os.ReadFile("README.md"))), string(must(os.ReadFile("README.zh-CN.md")))
	if a, b := headingLevels(en), headingLevels(zh); !slices.Equal(a, b) {
		t.Errorf("the headings differ, section by section:\nREADME.md:       %v\nREADME.zh-CN.md: %v", a, b)
	}
	const post = "【Linux网络编程六】服务器守护进程化Daemon"
	if !strings.Contains(en, post) || !strings.Contains(zh, post) {
		t.Errorf("both READMEs must name the post, %s", post)
	}
	for name, text := range map[string]string{"README.md": en, "README.zh-CN.md": zh} {
		if !strings.Contains(text, "CSDN") || !strings.Contains(text, "Linux网络编程") {
			t.Errorf("%s must say where readers find the post: CSDN, the series Linux网络编程", name)
		}
		if m := regexp.MustCompile(`shared/|seed/|daemon-post|\.\./`).FindString(text); m != "" {
			t.Errorf("%s points outside the repository (%q); a reader who clones echod has only the repository", name, m)
		}
	}
	if m := regexp.MustCompile("`(?:Test|Fuzz)[A-Za-z]+`, `").FindString(zh); m != "" {
		t.Errorf("README.zh-CN.md lists tests with a comma (%q); a Chinese list takes 、", m)
	}
	if m := regexp.MustCompile(`\([^()（）\n]*[，。、；：][^()（）\n]*\)`).FindString(zh); m != "" {
		t.Errorf("README.zh-CN.md mixes half-width parentheses with full-width punctuation: %q", m)
	}
	// Measured: a Go program drops an inherited SIG_IGN only where it installs a handler of
	// its own; SIGTSTP, SIGTTIN and SIGTTOU stay ignored too (SigIgn 0000000000380003).
	for name, text := range map[string]string{"README.md": en, "README.zh-CN.md": zh} {
		if m := regexp.MustCompile(`only for SIGHUP and SIGINT|只对 SIGHUP 和 SIGINT 保留`).FindString(text); m != "" {
			t.Errorf("%s says a Go program keeps an inherited ignore %q; it keeps it for SIGTSTP, SIGTTIN and SIGTTOU too", name, m)
		}
	}
	// The reload's rules (issue 22): a table in each, with the same four state names as the text,
	// nothing that echod no longer says, and no N standing for three values in one log line.
	rules := map[string][]string{
		"README.md":       {"| serving |", "| starting |", "| handing over |", "| stopping |"},
		"README.zh-CN.md": {"| 服务中 |", "| 启动中 |", "| 交接中 |", "| 退出中 |"},
	}
	for name, text := range map[string]string{"README.md": en, "README.zh-CN.md": zh} {
		for _, row := range rules[name] {
			if !strings.Contains(text, row) {
				t.Errorf("%s: the reload's rules have no row %q", name, row)
			}
		}
		if m := regexp.MustCompile(`passing the stop on|must be > 0|=N moved=N`).FindString(text); m != "" {
			t.Errorf("%s shows %q, which echod no longer says", name, m)
		}
	}
	cjk := `[\p{Han}\x{3000}-\x{303f}\x{ff00}-\x{ffef}“”]` // Han or CJK punctuation: GitHub renders a newline between two as a space
	for name, text := range map[string]string{"README.md": en, "README.zh-CN.md": zh} {
		for i, part := range strings.Split(text, "```") {
			if m := regexp.MustCompile(cjk + `\n` + cjk).FindString(part); i%2 == 0 && m != "" {
				t.Errorf("%s breaks a line inside a Chinese sentence: %q", name, m)
			}
		}
	}
	var code strings.Builder
	for _, dir := range []string{".", "production"} { // each server's tests
		for _, f := range must(os.ReadDir(dir)) {
			if strings.HasSuffix(f.Name(), "_test.go") {
				code.Write(must(os.ReadFile(filepath.Join(dir, f.Name()))))
			}
		}
	}
	for _, name := range enTests {
		if name = strings.Trim(name, "`"); !strings.Contains(code.String(), "func "+name+"(") {
			t.Errorf("the READMEs name %s, which is no test", name)
		}
	}
}

// headingLevels returns the levels of a Markdown text's headings ("##", "###"), in order, outside code blocks.
func headingLevels(md string) []string {
	var levels []string
	for i, part := range strings.Split(md, "\n```") {
		for line := range strings.Lines(part) {
			if level, _, ok := strings.Cut(line, " "); i%2 == 0 && ok && level != "" && strings.Trim(level, "#") == "" {
				levels = append(levels, level)
			}
		}
	}
	return levels
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
