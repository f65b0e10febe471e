// Command client sends each line of its input to an echo server and prints
// the reply, reconnecting as the post's client does when the server goes away.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

var (
	retries = flag.Int("retries", 10, "reconnect attempts before giving up on a line")
	wait    = flag.Duration("wait", time.Second, "pause between reconnect attempts")
	timeout = flag.Duration("timeout", 10*time.Second, "the longest wait for progress on a connection: connect, write or read")
)

func main() {
	flag.Parse()
	if p, err := strconv.ParseUint(flag.Arg(1), 10, 16); flag.NArg() != 2 || err != nil || p == 0 || *timeout <= 0 {
		fmt.Fprintln(os.Stderr, "client: usage: client [-retries N] [-wait D] [-timeout D] HOST PORT (1-65535)")
		os.Exit(2)
	}
	c := &client{addr: net.JoinHostPort(flag.Arg(0), flag.Arg(1))}
	in := bufio.NewReader(os.Stdin)
	fi, _ := os.Stdin.Stat()
	prompt := fi != nil && fi.Mode()&os.ModeCharDevice != 0 // a terminal, as isatty(3) would say
	for {
		if prompt {
			fmt.Fprint(os.Stderr, "Please enter# ")
		}
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			reply, err := c.exchange(line)
			if err != nil {
				fmt.Fprintf(os.Stderr, "client: giving up on %s after %d retries: %v\n", c.addr, *retries, err)
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

type client struct {
	addr string
	conn *net.TCPConn
	r    *bufio.Reader
}

// exchange sends line and returns the reply, reconnecting and resending
// after a failure, up to -retries times -wait apart. A resend delivers the
// line at least once, perhaps twice: harmless for an echo, not for a
// protocol whose requests change something.
func (c *client) exchange(line []byte) ([]byte, error) {
	reused := c.conn != nil
	reply, err := c.roundTrip(line)
	if err != nil && reused {
		reply, err = c.roundTrip(line) // e.g., the server closed after its last reply, as the post's does
	}
	for try := 1; err != nil && try <= *retries; try++ {
		fmt.Fprintf(os.Stderr, "client: %v; retry %d of %d in %v\n", err, try, *retries, *wait)
		time.Sleep(*wait)
		reply, err = c.roundTrip(line)
	}
	return reply, err
}

// roundTrip sends line on the connection, dialling a new one if need be, and
// reads the reply: up to its newline, or, after a last line without one, up
// to the server's close. It reads while it writes, as gopl's netcat3 does,
// or a line longer than the socket buffers would block both sides.
func (c *client) roundTrip(line []byte) ([]byte, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, *timeout)
		if err != nil {
			return nil, err // a new socket each time: the post reuses one after a failed connect()
		}
		c.conn = conn.(*net.TCPConn)
		c.r = bufio.NewReader(c.conn)
	}
	last := line[len(line)-1] != '\n'
	c.conn.SetDeadline(time.Now().Add(*timeout)) // before we read, too
	sent := make(chan error, 1)
	go func(conn *net.TCPConn) { sent <- send(conn, line, last) }(c.conn)
	var reply []byte
	var err error
	if last {
		reply, err = io.ReadAll(c.r)
	} else {
		reply, err = c.r.ReadBytes('\n')
	}
	if err == nil && len(reply) < len(line) {
		err = fmt.Errorf("reply cut short: %d of %d bytes", len(reply), len(line))
	}
	if err != nil || last {
		c.conn.Close() // which also ends a send that is stuck
	}
	if serr := <-sent; err == nil {
		err = serr
	}
	if err != nil || last {
		c.conn = nil
	}
	return reply, err
}

// send writes line in pieces, moving the deadline for both directions before
// each, so that -timeout bounds a stall, not a long line. After a last line,
// it half-closes, and the server's close ends the reply.
func send(conn *net.TCPConn, line []byte, last bool) error {
	for len(line) > 0 {
		n := min(len(line), 64<<10)
		conn.SetDeadline(time.Now().Add(*timeout))
		if _, err := conn.Write(line[:n]); err != nil {
			return err
		}
		line = line[n:]
	}
	if last {
		return conn.CloseWrite()
	}
	return nil
}
