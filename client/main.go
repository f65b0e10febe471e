// Command client sends each input line to an echo server, prints the reply, and reconnects.
package main

import (
	"bufio"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
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
	flag.CommandLine.Init("client", flag.ContinueOnError)
	flag.CommandLine.SetOutput(io.Discard) // a mistake is one line, below; -h, the whole usage
	addr, err := checkArgs(flag.CommandLine.Parse(os.Args[1:]))
	if err == flag.ErrHelp {
		fmt.Println("usage: client [flags] HOST PORT")
		flag.CommandLine.SetOutput(os.Stdout)
		flag.PrintDefaults()
		return
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v (usage: client [flags] HOST PORT; -h lists the flags)\n", err)
		os.Exit(2)
	}
	log.SetFlags(0) // a failure is one line on stderr, and exit 1
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
				log.Fatalf("client: giving up on %s after %d retries: %v", addr, *retries, err)
			}
			if _, err := os.Stdout.Write(reply); err != nil {
				log.Fatalln("client: writing the reply:", err) // e.g., > /dev/full
			}
		}
		if err == io.EOF {
			if prompt {
				fmt.Fprintln(os.Stderr) // after Ctrl-D, the shell's prompt starts on a line of its own
			}
			return
		} else if err != nil {
			log.Fatalln("client: reading input:", err)
		}
	}
}

// checkArgs gives HOST:PORT, or says what is wrong and what a right value looks like.
func checkArgs(err error) (string, error) {
	host, open := strings.CutPrefix(flag.Arg(0), "[") // [::1], as echod prints it
	host, closed := strings.CutSuffix(host, "]")
	_, ipErr := netip.ParseAddr(host) // fe80::1%lo has a zone; ::1% an empty one
	numeric := strings.Trim(host, "0123456789.") == "" || strings.ContainsAny(host, ":[]%")
	const want = "want -retries 0 or more, -wait 0s or more, -timeout above 0s, with a unit: 10s"
	switch p, portErr := strconv.ParseUint(flag.Arg(1), 10, 16); {
	case err != nil && !strings.HasPrefix(err.Error(), "invalid value"): // e.g., -bogus
		return "", err
	case err != nil || *retries < 0 || *wait < 0 || *timeout <= 0: // -wait 5, say
		return "", fmt.Errorf("%v; %s", cmp.Or(err, errors.New("out of range")), want)
	case flag.NArg() != 2:
		return "", fmt.Errorf("want HOST and PORT, such as 127.0.0.1 8080, not %q", flag.Args())
	case open != closed || numeric && ipErr != nil: // no retry mends 300.1.1.1
		return "", fmt.Errorf("HOST %q: want a name, or an address such as 127.0.0.1 or ::1", flag.Arg(0))
	case portErr != nil || p == 0:
		return "", fmt.Errorf("PORT %q: want a number from 1 to 65535", flag.Arg(1))
	}
	return net.JoinHostPort(host, flag.Arg(1)), nil
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
