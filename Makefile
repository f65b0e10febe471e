# echod: see README.md. `make run` starts the daemon with echod.log and
# echod.pid in this directory; `make reload` and `make stop` signal it.
# Another pair: make run stop PIDFILE=/tmp/x.pid LOG=/tmp/x.log
GO ?= go
PIDFILE ?= echod.pid
LOG ?= echod.log

.PHONY: all run stop reload ps client test test-systemd bench fuzz soak
all: bin/echod bin/client

bin/echod: go.mod $(wildcard *.go)
	$(GO) build -o $@ .

bin/client: go.mod $(wildcard client/*.go)
	$(GO) build -o $@ ./client

run: bin/echod
	./bin/echod -log "$(LOG)" -pidfile "$(PIDFILE)"

# A daemon holds its PID file's lock while it runs. After a crash the file names
# a dead daemon, and in time a stranger with its pid, so make signals a pid
# only while its file is locked. (9< opens the file without creating it.)
DAEMON = test -e "$(PIDFILE)" || { echo "echod: not running (no $(PIDFILE))" >&2; exit 1; }; \
	if flock -n 9 9<"$(PIDFILE)"; then echo "echod: not running (stale $(PIDFILE))" >&2; exit 1; fi; \
	pid=$$(cat "$(PIDFILE)")

# Waits until the daemon has exited: a zombie (Z) has once its threads have
# all gone (nlwp 1); until then they hold its files, and its PID file's lock.
GONE = ""|Z*" 1"
stop:
	@$(DAEMON); kill $$pid; \
	for i in $$(seq 100); do case "$$(ps -o stat=,nlwp= -p $$pid | tr -s ' ')" in $(GONE)) exit 0;; esac; sleep 0.1; done; \
	echo "echod: pid $$pid still running after 10s" >&2; exit 1

# Waits until the old daemon has handed over and gone (a failed new daemon
# may have written its pid for a moment), or the log says why not.
reload:
	@$(DAEMON); logged=$$(stat -c %s "$(LOG)" 2>/dev/null || echo 0); kill -HUP $$pid; \
	for i in $$(seq 150); do \
	  case "$$(ps -o stat=,nlwp= -p $$pid | tr -s ' ')" in $(GONE)) echo "echod: reloaded: pid $$pid, now $$(cat "$(PIDFILE)")"; exit 0;; esac; \
	  if tail -c +$$((logged + 1)) "$(LOG)" 2>/dev/null | grep 'reload failed' >&2; then exit 1; fi; \
	  sleep 0.1; done; \
	echo "echod: pid $$pid did not reload in 15s; see $(LOG)" >&2; exit 1

# The daemon beside the shell you typed `make ps` in (make's parent).
ps:
	@$(DAEMON); ps -o pid,ppid,pgid,sid,tty,stat,args -p "$$pid" -p "$$(ps -o ppid= -p $$PPID | tr -d " ")"

client: bin/client
	./bin/client 127.0.0.1 8080

# -race where the race detector can run: it needs cgo, and cgo a C compiler.
# Elsewhere nothing, and one line on stderr that says why.
RACE = $$(cc=$$($(GO) env CC); \
	if ! command -v "$${cc%% *}" >/dev/null; then echo "make $@: no C compiler ($$cc): running without the race detector" >&2; \
	elif [ "$$($(GO) env CGO_ENABLED)" != 1 ]; then echo "make $@: CGO_ENABLED=0: running without the race detector" >&2; \
	else echo -race; fi)

# go vet for the other Unixes too: the client and -foreground run there.
test:
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=freebsd $(GO) vet ./...
	@race=$(RACE); echo "$(GO) test $${race:+$$race }./..."; $(GO) test $$race ./...

# Boots a real systemd, 252 (Debian 12) then 257 (Debian 13), in a container
# and runs echod under the README's units (root; each Debian root file system
# is made once, then cached).
test-systemd:
	$(GO) test -count=1 -run '^TestSystemd$$' -v -timeout 20m . -systemd

# Each run has every server side by side; the runs interleave them, since
# these machines are noisy. The table gives the medians and ratios.
BENCHRUNS ?= 10
bench:
	@nproc; $(GO) version
	$(GO) test -c -o bin/echod.test .
	@rm -f bench.txt; for i in $$(seq $(BENCHRUNS)); do \
	  ./bin/echod.test -test.run '^$$' -test.bench . -test.benchtime 1s -reverse=$$((i % 2)) \
	  | tee -a bench.txt || exit 1; done
	@./bin/echod.test -test.run '^TestBenchTable$$' -benchfile bench.txt

FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzEcho$$' -fuzztime $(FUZZTIME) .

DURATION ?= 60s
soak:
	@race=$(RACE); $(GO) test $$race -count=1 -run '^TestSoak$$' -v -timeout 0 . -soak $(DURATION)
