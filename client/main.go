// Command client sends each input line to an echo server, prints the reply, and reconnects.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

var (
	retries = flag.Int("retries", 10, "reconnect attempts before giving up on a line")
	wait    = flag.Duration("wait", time.Second, "pause between reconnect attempts")
	timeout = flag.Duration("timeout", 10*time.Second, "longest stall: to connect, send, reply")
)

func main() {
	flag.Parse()
	host, open := strings.CutPrefix(flag.Arg(0), "[") // [::1], as echod prints it
	host, closed := strings.CutSuffix(host, "]")
	addr := net.JoinHostPort(host, flag.Arg(1))
	ip, _, _ := strings.Cut(host, "%") // fe80::1%lo has a zone; no retry mends 300.1.1.1
	numeric := strings.Trim(ip, "0123456789.") == "" || strings.ContainsAny(ip, ":[]")
	if p, err := strconv.ParseUint(flag.Arg(1), 10, 16); err != nil || p == 0 || open != closed ||
		flag.NArg() != 2 || numeric && net.ParseIP(ip) == nil ||
		*timeout <= 0 || *retries < 0 || *wait < 0 {
		fmt.Fprintln(os.Stderr, "client: usage: client [-retries N>=0] [-wait D>=0] [-timeout D>0]",
			"HOST PORT (1-65535)")
		os.Exit(2)
	}
	fi, _ := os.Stdin.Stat()
	prompt := fi != nil && fi.Mode()&os.ModeCharDevice != 0 // a terminal, as isatty(3) would say
	for in := bufio.NewReader(os.Stdin); ; {
		if prompt {
			fmt.Fprint(os.Stderr, "Please enter# ")
		}
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			reply, err := roundTrip(addr, line) // on failure, resent: at least once, maybe twice (harmless)
			for try := 1; err != nil && try <= *retries; try++ {
				fmt.Fprintf(os.Stderr, "client: %v; retry %d of %d in %v\n", err, try, *retries, *wait)
				time.Sleep(*wait)
				reply, err = roundTrip(addr, line)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "client: giving up on %s after %d retries: %v\n", addr, *retries, err)
				os.Exit(1)
			}
			if _, err := os.Stdout.Write(reply); err != nil {
				fmt.Fprintln(os.Stderr, "client: writing the reply:", err) // e.g., > /dev/full
				os.Exit(1)
			}
		}
		if err == io.EOF {
			if prompt {
				fmt.Fprintln(os.Stderr) // after Ctrl-D, the shell's prompt starts on a line of its own
			}
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "client: reading input:", err)
			os.Exit(1)
		}
	}
}

// roundTrip is one connection, as the post's client makes: connect, send, read the reply.
// It reads while it writes, as gopl's netcat3 does, or a long line would block both sides.
func roundTrip(addr string, line []byte) ([]byte, error) {
	nc, err := net.DialTimeout("tcp", addr, *timeout)
	if err != nil {
		return nil, err // a new socket each time: the post reuses one after a failed connect()
	}
	c := nc.(*net.TCPConn)
	go func() { // a failed send shows in the reply: cut short, or none
		for rest := line; len(rest) > 0; {
			n := min(len(rest), 64<<10)
			c.SetWriteDeadline(time.Now().Add(*timeout)) // per piece: a stall, not a long line
			if _, err := c.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		c.CloseWrite() // the server echoes what is left, and closes
	}()
	reply, err := io.ReadAll(stallReader{c})
	c.Close() // which also ends a send that is stuck
	if err == nil && len(reply) < len(line) {
		err = fmt.Errorf("reply cut short: %d of %d bytes", len(reply), len(line))
	}
	return reply, err
}

// stallReader gives each Read -timeout: a slow reply that keeps coming is no stall.
type stallReader struct{ c net.Conn }

func (r stallReader) Read(p []byte) (int, error) {
	r.c.SetReadDeadline(time.Now().Add(*timeout))
	return r.c.Read(p)
}
