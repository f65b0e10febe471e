# echod, the post's server: `make run` starts the daemon, with echod.log and
# echod.pid in this directory; `make ps` shows it beside your shell, and
# `make stop` stops it. Another one beside it: make run ADDR=127.0.0.1:8081,
# then make ps stop ADDR=127.0.0.1:8081 (its echod-8081.pid and echod-8081.log).
# production/ has its own: make -C production run, reload, stop, ps.
GO ?= go
HERE := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
ADDR ?= 127.0.0.1:8080
# Each ADDR but the first has a PID file and log of its own, named by its
# port, so that run, stop, ps and client with the same ADDR= find one daemon.
PORT = $(lastword $(subst :, ,$(ADDR)))
PIDFILE ?= echod$(if $(filter 127.0.0.1:8080,$(ADDR)),,-$(PORT)).pid
LOG ?= echod$(if $(filter 127.0.0.1:8080,$(ADDR)),,-$(PORT)).log

.PHONY: all run stop ps client test bench soak fuzz test-systemd
all: $(HERE)/bin/echod $(HERE)/bin/client

$(HERE)/bin/echod: $(HERE)/go.mod $(wildcard $(HERE)/*.go)
	cd "$(HERE)" && $(GO) build -o bin/echod .

$(HERE)/bin/client: $(HERE)/go.mod $(wildcard $(HERE)/client/*.go)
	cd "$(HERE)" && $(GO) build -o bin/client ./client

run: $(HERE)/bin/echod
	"$(HERE)/bin/echod" -addr "$(ADDR)" -log "$(LOG)" -pidfile "$(PIDFILE)"

# A daemon holds its PID file open, and locked, while it runs. After a crash
# the file names a dead daemon, and in time a stranger with its pid, so make
# signals a pid only if that very process holds this file open. (It takes no
# lock itself: for that moment, a daemon that starts would think one runs.)
DAEMON = command -v ps >/dev/null || { echo "echod: make $@ needs ps (apt-get install procps)" >&2; exit 1; }; \
	test -e "$(PIDFILE)" || { echo "echod: not running (no $(PIDFILE))" >&2; exit 1; }; \
	pid=$$(cat "$(PIDFILE)"); file=$$(readlink -f "$(PIDFILE)"); held=; \
	case "$$pid" in ""|*[!0-9]*) ;; *) for fd in /proc/$$pid/fd/*; do \
	  if [ "$$(readlink "$$fd")" = "$$file" ]; then held=1; fi; done;; esac; \
	test -n "$$held" || { echo "echod: not running (stale $(PIDFILE))" >&2; exit 1; }

# Waits until the daemon has exited: a zombie (Z) has once its threads have
# all gone (nlwp 1); until then they hold its files, and its PID file's lock.
stop:
	@$(DAEMON); kill $$pid; \
	for i in $$(seq 100); do case "$$(ps -o stat=,nlwp= -p $$pid | tr -s ' ')" in ""|Z*" 1") exit 0;; esac; sleep 0.1; done; \
	echo "echod: pid $$pid still running after 10s" >&2; exit 1

# The daemon beside the shell you typed `make ps` in (make's parent).
ps:
	@$(DAEMON); ps -o pid,ppid,pgid,sid,tty,stat,args -p "$$pid" -p "$$(ps -o ppid= -p $$PPID | tr -d " ")"

client: $(HERE)/bin/client
	@addr="$(ADDR)"; "$(HERE)/bin/client" "$${addr%:*}" "$${addr##*:}"

# -race where the race detector can run: it needs cgo, and cgo a C compiler.
# Elsewhere nothing, and one line on stderr that says why.
RACE = $$(cc=$$($(GO) env CC); \
	if ! command -v "$${cc%% *}" >/dev/null; then echo "make $@: no C compiler ($$cc): running without the race detector" >&2; \
	elif [ "$$($(GO) env CGO_ENABLED)" != 1 ]; then echo "make $@: CGO_ENABLED=0: running without the race detector" >&2; \
	else echo -race; fi)

# Both servers' tests; go vet for the other Unixes too: the client and
# -foreground run there. 1.5 to 2 minutes on 2 cores, quiet: testsum (see
# internal/testsum) prints a line per package as it ends, a failed test's or
# build's whole output, and at the end each skipped test with its reason.
test:
	@echo "make test: 1.5 to 2 minutes on 2 cores; a line per package as it ends, then the tests skipped and why"
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=freebsd $(GO) vet ./...
	@$(GO) build -o "$(HERE)/bin/testsum" ./internal/testsum
	@race=$(RACE); echo "bin/testsum $(GO) test -json $${race:+$$race }-parallel 6 ./..."; "$(HERE)/bin/testsum" $(GO) test -json $$race -parallel 6 ./...

# Production's alone: see production/Makefile.
bench soak fuzz test-systemd:
	$(MAKE) -C production $@
