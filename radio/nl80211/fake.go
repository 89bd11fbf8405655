package nl80211

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Fake is an in-memory Client for unit tests. Tests fill its fields through the setters; OnScan
// lets a test (or the RF simulation) produce scan results and surveys when a scan runs.
type Fake struct {
	mu       sync.Mutex
	ifaces   []Interface
	phys     []PHY
	stations map[string][]Station
	surveys  map[string][]Survey
	results  map[string][]BSS
	country  string
	scans    int

	// OnScan runs during Scan (without the fake's lock held) and may call the setters.
	OnScan func(ifname string, opts ScanOptions) error
}

// NewFake returns an empty fake with the world regulatory domain.
func NewFake() *Fake {
	return &Fake{stations: map[string][]Station{}, surveys: map[string][]Survey{}, results: map[string][]BSS{}, country: "00"}
}

// SetInterfaces replaces the interface list.
func (f *Fake) SetInterfaces(ifs ...Interface) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ifaces = slices.Clone(ifs)
}

// SetPHYs replaces the PHY list.
func (f *Fake) SetPHYs(phys ...PHY) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.phys = slices.Clone(phys)
}

// SetStations sets the stations of an interface.
func (f *Fake) SetStations(ifname string, s ...Station) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stations[ifname] = slices.Clone(s)
}

// SetSurvey sets the survey of an interface.
func (f *Fake) SetSurvey(ifname string, s ...Survey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.surveys[ifname] = slices.Clone(s)
}

// SetScanResults sets the scan results of an interface.
func (f *Fake) SetScanResults(ifname string, b ...BSS) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results[ifname] = slices.Clone(b)
}

// SetIfaceFreq changes an interface's operating channel (as hostapd's channel switch would).
func (f *Fake) SetIfaceFreq(ifname string, freq, width int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.ifaces {
		if f.ifaces[i].Name == ifname {
			f.ifaces[i].Freq, f.ifaces[i].Width = freq, width
		}
	}
}

// Scans counts Scan calls.
func (f *Fake) Scans() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scans
}

func (f *Fake) has(ifname string) error {
	for _, i := range f.ifaces {
		if i.Name == ifname {
			return nil
		}
	}
	return fmt.Errorf("nl80211: %s: %w", ifname, ErrNoInterface)
}

// Interfaces implements Client.
func (f *Fake) Interfaces() ([]Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ifaces), nil
}

// PHYs implements Client.
func (f *Fake) PHYs() ([]PHY, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.phys), nil
}

// Stations implements Client.
func (f *Fake) Stations(ifname string) ([]Station, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.has(ifname); err != nil {
		return nil, err
	}
	return slices.Clone(f.stations[ifname]), nil
}

// Survey implements Client.
func (f *Fake) Survey(ifname string) ([]Survey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.has(ifname); err != nil {
		return nil, err
	}
	return slices.Clone(f.surveys[ifname]), nil
}

// Scan implements Client.
func (f *Fake) Scan(ctx context.Context, ifname string, opts ScanOptions) error {
	f.mu.Lock()
	err := f.has(ifname)
	f.scans++
	hook := f.OnScan
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if hook != nil {
		return hook(ifname, opts)
	}
	return nil
}

// ScanResults implements Client.
func (f *Fake) ScanResults(ifname string) ([]BSS, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.has(ifname); err != nil {
		return nil, err
	}
	return slices.Clone(f.results[ifname]), nil
}

// Country implements Client.
func (f *Fake) Country() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.country, nil
}

// SetCountry implements Client.
func (f *Fake) SetCountry(c string) error {
	if len(c) != 2 {
		return fmt.Errorf("nl80211: country %q: need two letters", c)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.country = c
	return nil
}

// Close implements Client.
func (f *Fake) Close() error { return nil }

var _ Client = (*Fake)(nil)
