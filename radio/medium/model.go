package medium

import (
	"math"
	"sort"
	"sync"
	"time"
)

// Pos is a point in metres.
type Pos struct{ X, Y, Z float64 }

// Dist is the distance between two points.
func (p Pos) Dist(q Pos) float64 {
	return math.Sqrt((p.X-q.X)*(p.X-q.X) + (p.Y-q.Y)*(p.Y-q.Y) + (p.Z-q.Z)*(p.Z-q.Z))
}

// Waypoint is where a radio is At after the start of its walk.
type Waypoint struct {
	At  time.Duration
	Pos Pos
}

// Model gives the signal at which one radio hears another. Radios are named by their PHY name
// ("phy3") or, when the kernel gave none, by Addr.String().
type Model interface {
	// Signal returns the received signal in dBm of tx's transmission at rx on freq, at now.
	Signal(tx, rx string, freq int, now time.Time) float64
}

// Space is the default Model: radios at positions (fixed, or walking along waypoints), the
// log-distance path loss with an exponent, walls as a loss per wall crossed (vertical walls at
// the given X coordinates), per-link overrides, and the transmit power. Safe for concurrent
// use: tests move radios while the medium runs.
type Space struct {
	// TxPowerDBm is every radio's transmit power (default 20).
	TxPowerDBm float64
	// Exponent is the distance exponent (default 3, indoors).
	Exponent float64
	// WallsX are x coordinates of walls; WallDB the loss of each crossed (default 5).
	WallsX []float64
	WallDB float64

	mu    sync.Mutex
	fixed map[string]Pos
	walks map[string]walk
	extra map[[2]string]float64
	cut   map[[2]string]bool
}

type walk struct {
	start time.Time
	pts   []Waypoint
}

// NewSpace returns an empty space with the defaults.
func NewSpace() *Space {
	return &Space{TxPowerDBm: 20, Exponent: 3, WallDB: 5,
		fixed: map[string]Pos{}, walks: map[string]walk{}, extra: map[[2]string]float64{}, cut: map[[2]string]bool{}}
}

// Place puts a radio at p (and ends any walk).
func (s *Space) Place(radio string, p Pos) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fixed[radio] = p
	delete(s.walks, radio)
}

// Walk moves a radio along waypoints from start on (linear between them, staying at the last).
func (s *Space) Walk(radio string, start time.Time, pts []Waypoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pts = append([]Waypoint(nil), pts...)
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].At < pts[j].At })
	s.walks[radio] = walk{start: start, pts: pts}
}

// SetExtraLoss adds a loss to the link between a and b (both directions); 0 removes it.
func (s *Space) SetExtraLoss(a, b string, db float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if db == 0 {
		delete(s.extra, key(a, b))
	} else {
		s.extra[key(a, b)] = db
	}
}

// Cut makes a and b unable to hear each other (on true) or restores the link.
func (s *Space) Cut(a, b string, cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cut {
		s.cut[key(a, b)] = true
	} else {
		delete(s.cut, key(a, b))
	}
}

func key(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Position is where the radio is at now (ok false when it was never placed).
func (s *Space) Position(radio string, now time.Time) (Pos, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.positionLocked(radio, now)
}

func (s *Space) positionLocked(radio string, now time.Time) (Pos, bool) {
	if w, ok := s.walks[radio]; ok && len(w.pts) > 0 {
		t := now.Sub(w.start)
		if t <= w.pts[0].At {
			return w.pts[0].Pos, true
		}
		for i := 1; i < len(w.pts); i++ {
			a, b := w.pts[i-1], w.pts[i]
			if t <= b.At {
				span := b.At - a.At
				if span <= 0 {
					return b.Pos, true
				}
				f := float64(t-a.At) / float64(span)
				return Pos{a.Pos.X + f*(b.Pos.X-a.Pos.X), a.Pos.Y + f*(b.Pos.Y-a.Pos.Y), a.Pos.Z + f*(b.Pos.Z-a.Pos.Z)}, true
			}
		}
		return w.pts[len(w.pts)-1].Pos, true
	}
	p, ok := s.fixed[radio]
	return p, ok
}

// Unreachable is the signal returned for links that cannot carry a frame.
const Unreachable = -200.0

// PathLoss is the loss in dB over d metres at freq MHz: free space at 1 m, then the exponent.
func PathLoss(d float64, freq int, exponent float64) float64 {
	d = math.Max(d, 1)
	f := float64(freq)
	if f <= 0 {
		f = 2437
	}
	return 20*math.Log10(f) - 27.55 + 10*exponent*math.Log10(d)
}

// Signal implements Model.
func (s *Space) Signal(tx, rx string, freq int, now time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut[key(tx, rx)] {
		return Unreachable
	}
	a, ok1 := s.positionLocked(tx, now)
	b, ok2 := s.positionLocked(rx, now)
	if !ok1 || !ok2 {
		return Unreachable
	}
	loss := PathLoss(a.Dist(b), freq, s.Exponent) + s.extra[key(tx, rx)]
	for _, w := range s.WallsX {
		if (a.X-w)*(b.X-w) < 0 {
			loss += s.WallDB
		}
	}
	return s.TxPowerDBm - loss
}
