// Package nl80211 is Meshroot's access to the kernel's Wi-Fi configuration interface: interfaces,
// PHYs with their channels (regulatory flags, DFS state, width limits), associated stations,
// channel surveys, scans with the foreign BSSes' operating widths, and the regulatory domain.
//
// Client is the interface the radio manager uses; Open returns the real implementation, built on
// github.com/mdlayher/wifi v0.10.0 with a few generic-netlink requests of its own for what the
// library lacks (per-channel DFS state and width flags, scans from an AP interface with
// NL80211_SCAN_FLAG_AP, the information elements of scan results); Fake is the in-package
// stand-in for unit tests. Nothing here runs iw.
package nl80211

import (
	"context"
	"errors"
	"net"
	"time"
)

// IfType is an interface's mode.
type IfType string

// The interface types the radio code cares about.
const (
	IfStation IfType = "station"
	IfAP      IfType = "ap"
	IfMesh    IfType = "mesh"
	IfMonitor IfType = "monitor"
	IfOther   IfType = "other"
)

// Interface is one wireless netdev.
type Interface struct {
	Index int
	Name  string
	MAC   net.HardwareAddr
	PHY   int
	Type  IfType
	// Freq is the operating (primary) frequency in MHz, 0 when not operating.
	Freq int
	// Width is the operating width in MHz (0 when unknown).
	Width int
}

// BandID is nl80211's band number (enum nl80211_band).
type BandID int

// The bands.
const (
	Band2GHz  BandID = 0
	Band5GHz  BandID = 1
	Band60GHz BandID = 2
	Band6GHz  BandID = 3
)

// DFSState is a channel's radar state (enum nl80211_dfs_state).
type DFSState int

// The DFS states, as the kernel numbers them.
const (
	DFSUsable      DFSState = 0 // needs a CAC
	DFSUnavailable DFSState = 1 // radar seen: non-occupancy period
	DFSAvailable   DFSState = 2 // CAC done
)

// Channel is one 20 MHz channel of a PHY band.
type Channel struct {
	Freq     int
	Disabled bool
	NoIR     bool
	// Radar: DFS required. DFS and DFSTime (time since the state was entered) are meaningful only
	// then; CACTime is the channel's CAC duration (0: the kernel default of 60 s).
	Radar       bool
	DFS         DFSState
	DFSTime     time.Duration
	CACTime     time.Duration
	NoHT40Minus bool
	NoHT40Plus  bool
	No80        bool
	No160       bool
	IndoorOnly  bool
	MaxPowerDBm float64
}

// Band is one band of a PHY.
type Band struct {
	ID       BandID
	Channels []Channel
	// HT40 / VHT / VHT160 / HE are the PHY's capabilities on the band.
	HT40, VHT, VHT160 bool
}

// PHY is one radio.
type PHY struct {
	Index int
	Name  string
	Bands []Band
	// Modes are the interface types the PHY supports.
	Modes []IfType
}

// Station is one peer of an interface (an associated client of an AP).
type Station struct {
	MAC         net.HardwareAddr
	Signal      int // dBm, last
	SignalAvg   int // dBm, average
	RxBytes     uint64
	TxBytes     uint64
	RxBitrate   int // bit/s
	TxBitrate   int // bit/s
	TxRetries   int
	TxFailed    int
	BeaconLoss  int
	Inactive    time.Duration
	ConnectedAt time.Duration // time since association
}

// Survey is one channel's survey counters (NL80211_CMD_GET_SURVEY): cumulative times since the
// driver started counting. HasNoise is false when the driver gave no noise floor.
type Survey struct {
	Freq      int
	Noise     int // dBm
	HasNoise  bool
	InUse     bool
	Time      time.Duration
	TimeBusy  time.Duration
	TimeExt   time.Duration
	TimeRx    time.Duration
	TimeTx    time.Duration
	TimeScan  time.Duration
	TimeBSSRx time.Duration
}

// BSS is one scan result.
type BSS struct {
	BSSID  net.HardwareAddr
	SSID   string
	Freq   int     // primary channel, MHz
	Signal float64 // dBm
	// Width and Center1 come from the HT/VHT/HE operation elements (20 and Freq when absent).
	Width   int
	Center1 int
	// Load is the BSS Load element's channel utilisation, 0..255 (HasLoad false when absent),
	// and Stations its station count.
	Load     int
	HasLoad  bool
	Stations int
	LastSeen time.Duration
	// Associated is true for the BSS the interface is associated with.
	Associated bool
}

// ScanOptions narrow a scan.
type ScanOptions struct {
	// Freqs limits the scan to these channels (MHz); empty means all.
	Freqs []int
	// AP must be set to scan from an interface that is beaconing (NL80211_SCAN_FLAG_AP); the
	// radio leaves its channel for each foreign one for about 100 ms.
	AP bool
}

// Client is what the radio code needs from nl80211.
type Client interface {
	Interfaces() ([]Interface, error)
	PHYs() ([]PHY, error)
	Stations(ifname string) ([]Station, error)
	Survey(ifname string) ([]Survey, error)
	// Scan triggers a scan and waits for its results (or ctx); results are then read with
	// ScanResults.
	Scan(ctx context.Context, ifname string, opts ScanOptions) error
	ScanResults(ifname string) ([]BSS, error)
	// Country returns the system regulatory domain ("00" for world).
	Country() (string, error)
	SetCountry(country string) error
	Close() error
}

// Errors.
var (
	ErrNoInterface = errors.New("no such wireless interface")
	ErrScanAborted = errors.New("scan aborted")
)
