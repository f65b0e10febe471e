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
	"syscall"
	"time"
	"unsafe"
)

var (
	retries = flag.Int("retries", 10, "reconnect attempts before giving up on a line")
	wait    = flag.Duration("wait", time.Second, "pause between reconnect attempts")
)

func main() {
	flag.Parse()
	if p, err := strconv.ParseUint(flag.Arg(1), 10, 16); flag.NArg() != 2 || err != nil || p == 0 {
		fmt.Fprintln(os.Stderr, "client: usage: client [-retries N] [-wait D] HOST PORT (1-65535)")
		os.Exit(2)
	}
	c := &client{addr: net.JoinHostPort(flag.Arg(0), flag.Arg(1))}
	in := bufio.NewReader(os.Stdin)
	for {
		if isTerminal(os.Stdin) {
			fmt.Fprint(os.Stderr, "Please enter# ")
		}
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			reply, rerr := c.exchange(line)
			if rerr != nil {
				fmt.Fprintf(os.Stderr, "client: giving up on %s after %d retries: %v\n", c.addr, *retries, rerr)
				os.Exit(1)
			}
			os.Stdout.Write(reply)
		}
		if err == io.EOF {
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
// after a failure, up to -retries times -wait apart.
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

// roundTrip writes line on the connection, dialling a new one if need be, and
// reads the reply up to its newline.
func (c *client) roundTrip(line []byte) ([]byte, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
		if err != nil {
			return nil, err // a new socket each time: the post reuses one after a failed connect()
		}
		c.conn, c.r = conn.(*net.TCPConn), bufio.NewReader(conn)
	}
	_, err := c.conn.Write(line)
	last := line[len(line)-1] != '\n' // input ended without a newline
	if err == nil && last {
		err = c.conn.CloseWrite() // so the server's close ends the reply instead
	}
	var reply []byte
	if err == nil {
		reply, err = c.r.ReadBytes('\n')
		if err == io.EOF && last && len(reply) > 0 {
			err = nil
		}
	}
	if err != nil || last {
		c.conn.Close()
		c.conn = nil
	}
	return reply, err
}

// isTerminal reports whether f is a terminal, as isatty(3) does.
func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
