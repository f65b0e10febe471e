# echod: see README.md. `make run` starts the daemon with echod.log and
# echod.pid in this directory; `make stop` stops it.
GO ?= go

.PHONY: all run stop ps client test bench fuzz soak
all: bin/echod bin/client

bin/echod: go.mod $(wildcard *.go)
	$(GO) build -o $@ .

bin/client: go.mod $(wildcard client/*.go)
	$(GO) build -o $@ ./client

run: bin/echod
	./bin/echod -log echod.log -pidfile echod.pid

stop:
	@test -s echod.pid || { echo "echod: not running (no echod.pid)" >&2; exit 1; }
	kill $$(cat echod.pid)
	@for i in $$(seq 100); do test -e echod.pid || exit 0; sleep 0.1; done; \
	 echo "echod: still running after 10s" >&2; exit 1

# The daemon beside the shell you typed `make ps` in (make's parent).
ps:
	@test -s echod.pid || { echo "echod: not running (no echod.pid)" >&2; exit 1; }
	@ps -o pid,ppid,pgid,sid,tty,stat,args -p "$$(cat echod.pid)" -p "$$(ps -o ppid= -p $$PPID | tr -d " ")"

client: bin/client
	./bin/client 127.0.0.1 8080

test:
	$(GO) vet ./...
	$(GO) test -race ./...

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
	$(GO) test -race -count=1 -run '^TestSoak$$' -v -timeout 0 . -soak $(DURATION)
