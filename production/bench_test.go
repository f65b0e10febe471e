package main

import (
	"bufio"
	"echod/internal/echotest"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Each benchmark runs its server in a process of its own, this test binary
// again (see TestMain), so that the server's CPU time can be read alone.
const benchServerEnv = "ECHOD_BENCH_SERVER"

var reverse = flag.Bool("reverse", false, "run goroutine-per-connection before the pool (make bench alternates)")

// servers are echod's serve and the usual goroutine per connection, in the
// order of this run; the machine's state drifts, so make bench alternates it.
func servers(withC bool) []string {
	kinds := []string{"pool", "goroutine"}
	if withC {
		kinds = append(kinds, "c")
	}
	if *reverse {
		slices.Reverse(kinds)
	}
	return kinds
}

// epollC is the yardstick for the small-message workloads: a one-thread C
// epoll echo server, built with the machine's cc. Its writes assume the
// socket buffer has room, true for 64-byte messages only. It stops when its
// stdin closes.
const epollC = `#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t n = sizeof a;
	if (bind(ls, (void *)&a, n) || listen(ls, 4096) || getsockname(ls, (void *)&a, &n)) return 1;
	printf("127.0.0.1:%d\n", ntohs(a.sin_port));
	fflush(stdout);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN}, evs[256];
	ev.data.fd = ls; epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
	ev.data.fd = 0; epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
	static char buf[32 << 10];
	for (;;) {
		int k = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < k; i++) {
			int fd = evs[i].data.fd, c;
			if (fd == 0) return 0;
			if (fd == ls) {
				while ((c = accept4(ls, 0, 0, SOCK_NONBLOCK)) >= 0) {
					ev.data.fd = c; epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof buf);
			if (r == 0 || (r < 0 && errno != EAGAIN)) close(fd);
			else if (r > 0 && write(fd, buf, r) != r) close(fd);
		}
	}
}
`

// cServer builds epollC once; it reports "" where there is no C compiler.
var cServer = sync.OnceValue(func() string {
	dir, err := os.MkdirTemp("", "echod-epoll")
	if err != nil {
		return ""
	}
	src, bin := filepath.Join(dir, "epoll.c"), filepath.Join(dir, "epoll")
	os.WriteFile(src, []byte(epollC), 0o644)
	if out, err := exec.Command("cc", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "no C yardstick: %v\n%s", err, out)
		return ""
	}
	return bin
})

// benchServer is the server process: it prints its address and serves until
// its stdin closes, which happens when the benchmark kills it or dies.
func benchServer(kind string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	if kind == "pool" {
		p := &pool{jobs: make(chan job, 64), idle: time.Minute}
		served := p.serve(ln, nil, 64, nil)
		<-stop
		p.stop(ln, nil)
		time.AfterFunc(time.Second, p.release)
		<-served
		return
	}
	go func() { <-stop; ln.Close() }()
	perConnection(ln)
}

// perConnection is the plain goroutine-per-connection echo server that the
// pool is compared with.
func perConnection(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// startBenchServer starts a server process of the given kind and returns its
// address and pid.
func startBenchServer(b *testing.B, kind string) (addr string, pid int) {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	if kind == "c" {
		echotest.NeedTool(b, "cc", "gcc")
		if cmd = exec.Command(cServer()); cServer() == "" {
			b.Skip("cc could not build the C server")
		}
	}
	cmd.Env = append(os.Environ(), benchServerEnv+"="+kind)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the server's signal to stop
		t := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		cmd.Wait()
		t.Stop()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("bench server: %v", err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid
}

// measure runs work, which must do b.N operations, and reports the rate and
// the server's CPU time per operation.
func measure(b *testing.B, pid int, work func()) {
	b.ResetTimer()
	cpu0, t0 := echotest.CPUTime(b, pid), time.Now()
	work()
	elapsed, cpu := time.Since(t0), echotest.CPUTime(b, pid)-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "server-ns/op")
}

// parallel runs n goroutines that share b.N operations, each calling op with
// its goroutine's number.
func parallel(b *testing.B, n int, op func(g int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(g); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// benchConns opens n connections to addr for the length of the benchmark.
func benchConns(b *testing.B, addr string, n int) []*net.TCPConn {
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		conns[i] = echotest.Dial(b, addr)
		conns[i].SetDeadline(time.Time{}) // a benchmark may run longer than dial allows
	}
	return conns
}

// BenchmarkRoundTrip: 16 connections, each sending 64 bytes and waiting for
// the echo before the next send.
func BenchmarkRoundTrip(b *testing.B) {
	for _, kind := range servers(true) {
		b.Run(kind, func(b *testing.B) {
			addr, pid := startBenchServer(b, kind)
			conns := benchConns(b, addr, 16)
			bufs := make([][]byte, len(conns))
			for i := range bufs {
				bufs[i] = make([]byte, 64)
			}
			measure(b, pid, func() {
				parallel(b, len(conns), func(g int) error {
					if _, err := conns[g].Write(bufs[g]); err != nil {
						return err
					}
					_, err := io.ReadFull(conns[g], bufs[g])
					return err
				})
			})
		})
	}
}

// BenchmarkConnPerMessage is the post's client pattern, 16 at a time:
// connect, send 64 bytes, read the echo, close.
func BenchmarkConnPerMessage(b *testing.B) {
	for _, kind := range servers(true) {
		b.Run(kind, func(b *testing.B) {
			addr, pid := startBenchServer(b, kind)
			measure(b, pid, func() {
				parallel(b, 16, func(int) error {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						return err
					}
					defer c.Close()
					buf := make([]byte, 64)
					if _, err := c.Write(buf); err != nil {
						return err
					}
					_, err = io.ReadFull(c, buf)
					return err
				})
			})
		})
	}
}

// BenchmarkBulk: 4 connections streaming 64 KiB writes while reading the echo.
func BenchmarkBulk(b *testing.B) {
	const size = 64 << 10
	for _, kind := range servers(false) {
		b.Run(kind, func(b *testing.B) {
			addr, pid := startBenchServer(b, kind)
			conns := benchConns(b, addr, 4)
			b.SetBytes(size)
			measure(b, pid, func() {
				var wg sync.WaitGroup
				for i, c := range conns {
					n := b.N / len(conns)
					if i < b.N%len(conns) {
						n++
					}
					wg.Go(func() {
						buf := make([]byte, size)
						for range n {
							if _, err := c.Write(buf); err != nil {
								b.Error(err)
								return
							}
						}
					})
					wg.Go(func() {
						if _, err := io.CopyN(io.Discard, c, int64(n)*size); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			})
		})
	}
}

// BenchmarkFloodRSS reports the server's peak resident memory with 3000
// connected clients that have each sent one byte. Each iteration is a fresh
// server, since the peak never goes down.
func BenchmarkFloodRSS(b *testing.B) {
	for _, kind := range servers(false) {
		b.Run(kind, func(b *testing.B) {
			for range b.N {
				b.ReportMetric(float64(flood(b, kind, 3000)), "peak-KiB")
			}
		})
	}
}

// flood connects n clients to a new server that each send one byte and wait
// a moment for the echo (a pool echoes only some), and returns the server's
// peak memory in KiB.
func flood(b *testing.B, kind string, n int) int {
	addr, pid := startBenchServer(b, kind)
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 30*time.Second)
			if err != nil {
				b.Error(err)
				return
			}
			conns[i] = c
			c.Write([]byte{1})
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.Read(make([]byte, 1))
		})
	}
	wg.Wait()
	peak := vmHWM(b, pid)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return peak
}

// TestEchoAllocs proves that echoing a message allocates nothing, on the
// server or on this side, once the connection is up.
func TestEchoAllocs(t *testing.T) {
	c := echotest.Dial(t, inProcess())
	buf := make([]byte, 64)
	if n := testing.AllocsPerRun(1000, func() {
		c.Write(buf)
		io.ReadFull(c, buf)
	}); n != 0 {
		t.Errorf("%v allocations per echoed message", n)
	}
}

var benchFile = flag.String("benchfile", "", "`file` of go test -bench output for TestBenchTable")

// TestBenchTable prints the medians of the benchmarks in -benchfile, echod's
// pool beside goroutine-per-connection, with their ratio. make bench runs it.
func TestBenchTable(t *testing.T) {
	if *benchFile == "" {
		t.Skip("no -benchfile")
	}
	data, err := os.ReadFile(*benchFile)
	if err != nil {
		t.Fatal(err)
	}
	// values[benchmark/kind][unit] holds one value per run.
	values := map[string]map[string][]float64{}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0][:strings.LastIndexByte(f[0], '-')], "Benchmark")
		if values[name] == nil {
			values[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, _ := strconv.ParseFloat(f[i], 64)
			values[name][f[i+1]] = append(values[name][f[i+1]], v)
		}
	}
	median := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		v = slices.Sorted(slices.Values(v))
		return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
	}
	fmt.Printf("%-15s %-16s %11s %15s %7s %10s %7s  %s\n", "workload", "metric", "echod pool", "goroutine/conn", "ratio", "C epoll", "pool/C", "runs")
	for _, w := range []struct{ name, unit, label string }{
		{"RoundTrip", "ops/s", "round trips/s"},
		{"RoundTrip", "server-ns/op", "server ns/op"},
		{"ConnPerMessage", "ops/s", "conns/s"},
		{"ConnPerMessage", "server-ns/op", "server ns/op"},
		{"Bulk", "MB/s", "MB/s"},
		{"Bulk", "server-ns/op", "server ns/64KiB"},
		{"FloodRSS", "peak-KiB", "peak RSS KiB"},
	} {
		pool, gpc, c := values[w.name+"/pool"][w.unit], values[w.name+"/goroutine"][w.unit], values[w.name+"/c"][w.unit]
		if len(pool) == 0 || len(gpc) == 0 {
			continue
		}
		fmt.Printf("%-15s %-16s %11.0f %15.0f %7.3f", w.name, w.label, median(pool), median(gpc), median(pool)/median(gpc))
		if len(c) > 0 {
			fmt.Printf(" %10.0f %7.3f", median(c), median(pool)/median(c))
		} else {
			fmt.Printf(" %10s %7s", "-", "-")
		}
		fmt.Printf("  %d\n", len(pool))
	}
}
