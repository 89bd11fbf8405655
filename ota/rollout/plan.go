// Package rollout is the staged-rollout side of OTA: which devices may take a release when
// (waves over hash(device ID, release) mod 2048, maintenance windows, a halt flag), the install
// reports devices send, and the HTTP handler a fleet cloud mounts to collect them and halt a
// release automatically when too many of the last N reports are failures.
package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Buckets is the number of rollout buckets; a device's bucket is hash(device ID, release) mod
// Buckets (2048, as Bottlerocket's update seed).
const Buckets = 2048

// Bucket returns the device's bucket for a release (the TUF target path). It is stable for a
// device and a release, and independent between releases, so the first wave is not always
// the same devices.
func Bucket(deviceID, release string) int {
	h := sha256.Sum256([]byte(deviceID + "\x00" + release))
	return int(binary.BigEndian.Uint64(h[:8]) % Buckets)
}

// Wave opens the release to the buckets [0, Upto) from Start on.
type Wave struct {
	Start time.Time `json:"start"`
	Upto  int       `json:"upto"`
}

// Window is a daily maintenance window in the device's local time: from Start ("HH:MM") for
// Duration, on the listed weekdays (all days when empty).
type Window struct {
	Days     []string `json:"days,omitempty"`
	Start    string   `json:"start"`
	Duration Duration `json:"duration"`
}

// Duration is a time.Duration that reads and writes as a string ("3h", "90m").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"3h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Plan is the rollout of one release, carried in the release's signed TUF metadata.
type Plan struct {
	// Waves in order of Start; Upto never decreases. No waves means every device at once.
	Waves []Wave `json:"waves,omitempty"`
	// Windows restrict when a device may install and reboot; none means any time.
	Windows []Window `json:"windows,omitempty"`
	// Halted stops the release: no device starts installing it (devices that already run it
	// keep it).
	Halted     bool       `json:"halted,omitempty"`
	HaltReason string     `json:"halt_reason,omitempty"`
	HaltedAt   *time.Time `json:"halted_at,omitempty"`
}

var days = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Validate checks the plan; the error names the field.
func (p *Plan) Validate() error {
	for i, w := range p.Waves {
		if w.Upto < 1 || w.Upto > Buckets {
			return fmt.Errorf("rollout: waves[%d].upto = %d; want 1..%d", i, w.Upto, Buckets)
		}
		if w.Start.IsZero() {
			return fmt.Errorf("rollout: waves[%d].start is missing", i)
		}
		if i > 0 {
			prev := p.Waves[i-1]
			if w.Start.Before(prev.Start) {
				return fmt.Errorf("rollout: waves[%d].start %s is before waves[%d].start %s", i, w.Start.Format(time.RFC3339), i-1, prev.Start.Format(time.RFC3339))
			}
			if w.Upto < prev.Upto {
				return fmt.Errorf("rollout: waves[%d].upto %d is below waves[%d].upto %d", i, w.Upto, i-1, prev.Upto)
			}
		}
	}
	for i, w := range p.Windows {
		if _, err := clock(w.Start); err != nil {
			return fmt.Errorf("rollout: windows[%d].start: %w", i, err)
		}
		if w.Duration <= 0 || time.Duration(w.Duration) > 24*time.Hour {
			return fmt.Errorf("rollout: windows[%d].duration %s; want (0, 24h]", i, time.Duration(w.Duration))
		}
		for _, d := range w.Days {
			if _, ok := days[strings.ToLower(d)]; !ok {
				return fmt.Errorf("rollout: windows[%d].days: %q is not sun..sat", i, d)
			}
		}
	}
	return nil
}

// clock parses "HH:MM" into minutes after midnight.
func clock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%q: want HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || len(h) != 2 || len(m) != 2 || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("%q: want HH:MM", s)
	}
	return hh*60 + mm, nil
}

// Reasons a device may not take a release now.
var (
	ErrHalted      = errors.New("release is halted")
	ErrNotYourWave = errors.New("device's wave has not started")
	ErrOutOfWindow = errors.New("outside the maintenance window")
)

// Decision says whether a device may install a release now.
type Decision struct {
	Bucket int
	// Wave is the index of the first wave that includes the bucket, -1 when none does.
	Wave int
	// Err is nil when the device may install now, else one of the Err... reasons (wrapped).
	Err error
	// NotBefore is when to look again, when known (the device's wave start or next window).
	NotBefore time.Time
}

// Decide tells whether the device with bucket may install under p at now (with now in the
// device's local time zone for the windows).
func (p *Plan) Decide(bucket int, now time.Time) Decision {
	d := Decision{Bucket: bucket, Wave: -1}
	if p.Halted {
		d.Err = fmt.Errorf("%w: %s", ErrHalted, p.HaltReason)
		return d
	}
	if len(p.Waves) > 0 {
		for i, w := range p.Waves {
			if bucket < w.Upto {
				d.Wave = i
				break
			}
		}
		if d.Wave < 0 {
			d.Err = fmt.Errorf("%w: bucket %d is beyond the last wave (upto %d)", ErrNotYourWave, bucket, p.Waves[len(p.Waves)-1].Upto)
			return d
		}
		if start := p.Waves[d.Wave].Start; now.Before(start) {
			d.Err = fmt.Errorf("%w: bucket %d is in wave %d from %s", ErrNotYourWave, bucket, d.Wave, start.UTC().Format(time.RFC3339))
			d.NotBefore = start
			return d
		}
	} else {
		d.Wave = 0
	}
	if ok, next := p.InWindow(now); !ok {
		d.Err = fmt.Errorf("%w: next opens %s", ErrOutOfWindow, next.Format(time.RFC3339))
		d.NotBefore = next
	}
	return d
}

// InWindow reports whether now (device local time) is inside a maintenance window, and if not,
// when the next one opens.
func (p *Plan) InWindow(now time.Time) (bool, time.Time) {
	if len(p.Windows) == 0 {
		return true, time.Time{}
	}
	var next []time.Time
	for _, w := range p.Windows {
		startMin, err := clock(w.Start)
		if err != nil {
			continue
		}
		// A window that opened yesterday may still be open; look from yesterday on.
		for dayOff := -1; dayOff <= 7; dayOff++ {
			day := time.Date(now.Year(), now.Month(), now.Day()+dayOff, 0, 0, 0, 0, now.Location())
			if !w.onDay(day.Weekday()) {
				continue
			}
			open := day.Add(time.Duration(startMin) * time.Minute)
			end := open.Add(time.Duration(w.Duration))
			if !now.Before(open) && now.Before(end) {
				return true, time.Time{}
			}
			if open.After(now) {
				next = append(next, open)
				break
			}
		}
	}
	sort.Slice(next, func(i, j int) bool { return next[i].Before(next[j]) })
	if len(next) == 0 {
		return false, time.Time{}
	}
	return false, next[0]
}

func (w Window) onDay(d time.Weekday) bool {
	if len(w.Days) == 0 {
		return true
	}
	for _, s := range w.Days {
		if days[strings.ToLower(s)] == d {
			return true
		}
	}
	return false
}

// ParseWaves reads the CLI form "START:PERCENT,..." where START is "now", an RFC 3339 time, or
// "+DURATION" after the previous wave (or now for the first), e.g. "now:1%,+1h:10%,+24h:100%".
func ParseWaves(s string, now time.Time) ([]Wave, error) {
	var waves []Wave
	prev := now
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		at, pct, ok := cutLast(item, ":")
		if !ok {
			return nil, fmt.Errorf("wave %d %q: want START:PERCENT", i, item)
		}
		var start time.Time
		switch {
		case at == "now":
			start = now
		case strings.HasPrefix(at, "+"):
			d, err := time.ParseDuration(at[1:])
			if err != nil {
				return nil, fmt.Errorf("wave %d start %q: %w", i, at, err)
			}
			start = prev.Add(d)
		default:
			t, err := time.Parse(time.RFC3339, at)
			if err != nil {
				return nil, fmt.Errorf("wave %d start %q: want now, +DURATION or RFC 3339: %w", i, at, err)
			}
			start = t
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(pct, "%"), 64)
		if err != nil || f <= 0 || f > 100 {
			return nil, fmt.Errorf("wave %d percent %q: want (0, 100]", i, pct)
		}
		upto := int(f*Buckets/100 + 0.999999)
		if upto > Buckets {
			upto = Buckets
		}
		waves = append(waves, Wave{Start: start.UTC().Truncate(time.Second), Upto: upto})
		prev = start
	}
	p := Plan{Waves: waves}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return waves, nil
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
