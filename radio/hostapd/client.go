package hostapd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultCtrlDir is where hostapd creates its per-interface control sockets
// (ctrl_interface=/var/run/hostapd).
const DefaultCtrlDir = "/var/run/hostapd"

// Protocol limits (hostapd/ctrl_iface.c: requests are read into 4096 bytes with a terminating NUL,
// replies are built in 8192 bytes).
const (
	maxRequest = 4095
	maxReply   = 8192
	// eventQueue is how many unsolicited events are buffered for the reader of Events before
	// the oldest are dropped. hostapd detaches a monitor that stops draining its socket, so the
	// socket is always drained and overflow is counted instead.
	eventQueue = 256
)

// Errors a request can end with.
var (
	// ErrFail is hostapd's "FAIL" reply: the command was understood and refused.
	ErrFail = errors.New("hostapd replied FAIL")
	// ErrUnknownCommand is hostapd's "UNKNOWN COMMAND" reply (older hostapd or a build
	// without the feature, e.g. CONFIG_WNM_AP).
	ErrUnknownCommand = errors.New("hostapd replied UNKNOWN COMMAND")
	// ErrTimeout means no reply came within the timeout. The client then drops its socket and
	// binds a new one, so that a late reply cannot be taken for the answer to a later request.
	ErrTimeout = errors.New("hostapd did not reply in time")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("hostapd client closed")
)

// Options tune a Client. The zero value is usable.
type Options struct {
	// LocalDir is where the client binds its own datagram socket (hostapd replies to it).
	// Default: os.TempDir().
	LocalDir string
	// Timeout bounds each request when the context has no earlier deadline. Default 5 s
	// (hostapd_cli waits 10 s; hostapd answers in microseconds unless it is stuck).
	Timeout time.Duration
	// Logger receives debug lines about reconnects and dropped events. Default: discard.
	Logger *slog.Logger
}

// Client speaks hostapd's control-interface protocol over its UNIX datagram socket
// (/var/run/hostapd/<ifname>): requests are single datagrams, each answered by exactly one
// datagram; unsolicited events ("<level>TEXT") arrive on the same socket once ATTACHed.
//
// One socket carries both: a reader goroutine sends events to Events and replies to the one
// request in flight (requests are serialised, as hostapd answers strictly in order). A request
// that times out poisons the socket (its late reply would answer the next request), so the client
// closes it, binds a fresh one and, if it was attached, attaches again and reports an
// EventReattached so that the caller can resynchronise. Safe for concurrent use.
type Client struct {
	path    string
	ifname  string
	opts    Options
	log     *slog.Logger
	events  chan Event
	dropped atomic.Uint64

	mu       sync.Mutex // serialises requests and guards the fields below
	sock     *socket
	attached bool
	closed   bool
}

var localCounter atomic.Uint64

// socket is one bound client socket and its reader goroutine.
type socket struct {
	conn    *net.UnixConn
	local   string
	replies chan []byte
	done    chan struct{}
}

// Dial connects to hostapd's control socket at path (e.g. /var/run/hostapd/wlan0) and checks it
// answers PING.
func Dial(ctx context.Context, path string, opts Options) (*Client, error) {
	if opts.LocalDir == "" {
		opts.LocalDir = os.TempDir()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		path:   path,
		ifname: filepath.Base(path),
		opts:   opts,
		log:    log.With("iface", filepath.Base(path)),
		events: make(chan Event, eventQueue),
	}
	if err := c.Ping(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Interface returns the interface name of the control socket (its file name).
func (c *Client) Interface() string { return c.ifname }

// Events returns the channel of unsolicited events (after Attach). It is closed by Close.
func (c *Client) Events() <-chan Event { return c.events }

// DroppedEvents counts events dropped because the Events channel was full.
func (c *Client) DroppedEvents() uint64 { return c.dropped.Load() }

// Close detaches (best effort), closes the socket and removes its file.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if c.attached && c.sock != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, _ = c.requestLocked(ctx, "DETACH")
		cancel()
	}
	c.closed = true
	c.dropSocketLocked()
	close(c.events)
	return nil
}

func (c *Client) openSocketLocked() error {
	local := filepath.Join(c.opts.LocalDir, fmt.Sprintf("meshroot-hapd-%d-%d", os.Getpid(), localCounter.Add(1)))
	if len(local) >= 108 || len(c.path) >= 108 {
		return fmt.Errorf("hostapd %s: socket path too long for AF_UNIX (%q, %q)", c.ifname, local, c.path)
	}
	_ = os.Remove(local)
	conn, err := net.DialUnix("unixgram",
		&net.UnixAddr{Name: local, Net: "unixgram"},
		&net.UnixAddr{Name: c.path, Net: "unixgram"})
	if err != nil {
		_ = os.Remove(local)
		return fmt.Errorf("hostapd %s: connect %s: %w", c.ifname, c.path, err)
	}
	s := &socket{conn: conn, local: local, replies: make(chan []byte, 1), done: make(chan struct{})}
	c.sock = s
	go c.read(s)
	return nil
}

func (c *Client) dropSocketLocked() {
	if c.sock == nil {
		return
	}
	_ = c.sock.conn.Close()
	<-c.sock.done
	_ = os.Remove(c.sock.local)
	c.sock = nil
}

// read runs for the lifetime of one socket: events go to c.events, everything else is a reply.
func (c *Client) read(s *socket) {
	defer close(s.done)
	buf := make([]byte, maxReply+1)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// The next request sees done closed and binds a new socket.
			c.log.Debug("hostapd read", "err", err)
			return
		}
		msg := buf[:n]
		if isEvent(msg) {
			ev, err := ParseEvent(string(msg))
			if err != nil {
				c.log.Debug("hostapd event unparsable", "err", err)
				continue
			}
			c.deliver(ev)
			continue
		}
		select {
		case s.replies <- bytes.Clone(msg):
		default:
			// Nobody waits for it (a reply after its request gave up): drop it.
			c.log.Debug("hostapd stray reply dropped", "len", n)
		}
	}
}

// deliver hands an event to Events, dropping the oldest queued one when full.
func (c *Client) deliver(ev Event) {
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case <-c.events:
			c.dropped.Add(1)
		default:
		}
	}
}

func isEvent(msg []byte) bool {
	return (len(msg) > 0 && msg[0] == '<') || bytes.HasPrefix(msg, []byte("IFNAME="))
}

// Request sends one command and returns hostapd's reply text. A "FAIL" reply returns ErrFail, an
// "UNKNOWN COMMAND" reply ErrUnknownCommand (both wrapped with the command's first word only, so
// arguments such as keys never reach an error string).
func (c *Client) Request(ctx context.Context, cmd string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", ErrClosed
	}
	return c.requestLocked(ctx, cmd)
}

func verb(cmd string) string {
	if i := strings.IndexByte(cmd, ' '); i >= 0 {
		return cmd[:i]
	}
	return cmd
}

func (c *Client) requestLocked(ctx context.Context, cmd string) (string, error) {
	v := verb(cmd)
	if len(cmd) > maxRequest {
		return "", fmt.Errorf("hostapd %s: %s: request of %d bytes exceeds %d", c.ifname, v, len(cmd), maxRequest)
	}
	if c.sock != nil {
		select {
		case <-c.sock.done: // its reader died: start over
			c.dropSocketLocked()
		default:
		}
	}
	if c.sock == nil {
		if err := c.openSocketLocked(); err != nil {
			return "", err
		}
		if c.attached && v != "ATTACH" && v != "DETACH" {
			if err := c.reattachLocked(ctx); err != nil {
				return "", err
			}
		}
	}
	reply, err := c.roundTripLocked(ctx, cmd)
	if err != nil && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)) {
		// hostapd restarted (a new socket at the same path): reconnect once.
		c.dropSocketLocked()
		if oerr := c.openSocketLocked(); oerr != nil {
			return "", oerr
		}
		if c.attached && v != "ATTACH" && v != "DETACH" {
			if aerr := c.reattachLocked(ctx); aerr != nil {
				return "", aerr
			}
		}
		reply, err = c.roundTripLocked(ctx, cmd)
	}
	if err != nil {
		return "", fmt.Errorf("hostapd %s: %s: %w", c.ifname, v, err)
	}
	switch reply {
	case "FAIL\n":
		return "", fmt.Errorf("hostapd %s: %s: %w", c.ifname, v, ErrFail)
	case "UNKNOWN COMMAND\n":
		return "", fmt.Errorf("hostapd %s: %s: %w", c.ifname, v, ErrUnknownCommand)
	}
	return reply, nil
}

func (c *Client) roundTripLocked(ctx context.Context, cmd string) (string, error) {
	s := c.sock
	// A reply left over from an abandoned request cannot be here (that socket was replaced),
	// but drain defensively.
	select {
	case <-s.replies:
	default:
	}
	if _, err := s.conn.Write([]byte(cmd)); err != nil {
		return "", err
	}
	timer := time.NewTimer(c.opts.Timeout)
	defer timer.Stop()
	select {
	case r := <-s.replies:
		return string(r), nil
	case <-timer.C:
		c.poisonLocked()
		return "", ErrTimeout
	case <-ctx.Done():
		c.poisonLocked()
		return "", ctx.Err()
	case <-s.done:
		c.dropSocketLocked()
		return "", net.ErrClosed
	}
}

// poisonLocked replaces the socket after an unanswered request.
func (c *Client) poisonLocked() {
	c.log.Debug("hostapd request abandoned: rebinding control socket")
	c.dropSocketLocked()
}

func (c *Client) reattachLocked(ctx context.Context) error {
	reply, err := c.roundTripLocked(ctx, "ATTACH")
	if err != nil {
		return fmt.Errorf("hostapd %s: re-ATTACH: %w", c.ifname, err)
	}
	if reply != "OK\n" {
		return fmt.Errorf("hostapd %s: re-ATTACH: unexpected reply %q", c.ifname, firstLine(reply))
	}
	c.deliver(Event{Name: EventReattached, Level: LevelInfo, Iface: c.ifname})
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// expectOK runs a command whose success reply is "OK".
func (c *Client) expectOK(ctx context.Context, cmd string) error {
	reply, err := c.Request(ctx, cmd)
	if err != nil {
		return err
	}
	if strings.TrimSpace(reply) != "OK" {
		return fmt.Errorf("hostapd %s: %s: unexpected reply %q", c.ifname, verb(cmd), firstLine(reply))
	}
	return nil
}

// Ping checks hostapd answers ("PONG").
func (c *Client) Ping(ctx context.Context) error {
	reply, err := c.Request(ctx, "PING")
	if err != nil {
		return err
	}
	if reply != "PONG\n" {
		return fmt.Errorf("hostapd %s: PING: unexpected reply %q", c.ifname, firstLine(reply))
	}
	return nil
}

// Attach registers the client for unsolicited events (read them from Events). hostapd keeps
// sending them until Detach, Close, or until the client's socket stops draining.
func (c *Client) Attach(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	reply, err := c.requestLocked(ctx, "ATTACH")
	if err != nil {
		return err
	}
	if reply != "OK\n" {
		return fmt.Errorf("hostapd %s: ATTACH: unexpected reply %q", c.ifname, firstLine(reply))
	}
	c.attached = true
	return nil
}

// Detach stops unsolicited events.
func (c *Client) Detach(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.attached = false
	reply, err := c.requestLocked(ctx, "DETACH")
	if err != nil {
		return err
	}
	if reply != "OK\n" {
		return fmt.Errorf("hostapd %s: DETACH: unexpected reply %q", c.ifname, firstLine(reply))
	}
	return nil
}

// Status runs STATUS.
func (c *Client) Status(ctx context.Context) (Status, error) {
	reply, err := c.Request(ctx, "STATUS")
	if err != nil {
		return Status{}, err
	}
	st, err := ParseStatus(reply)
	if err != nil {
		return Status{}, fmt.Errorf("hostapd %s: STATUS: %w", c.ifname, err)
	}
	return st, nil
}
