package firmware

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ReadyMarker starts the one machine-readable line meshd prints on the console when its
// services are up. The JSON object after it (ReadyInfo) is on the same line; VM tests wait for
// the marker and parse the rest.
const ReadyMarker = "MESHROOT-READY "

// ReadyInfo is the JSON of the ready line. Field order is the wire order.
type ReadyInfo struct {
	// Board is the detected board's catalog name ("generic" after a failed detection).
	Board string `json:"board"`
	// Version is the firmware version from /etc/meshroot/release ("dev" without one).
	Version string `json:"version"`
	// Services are the services that are up, in start order.
	Services []string `json:"services"`
	// UptimeMS is the kernel's uptime (CLOCK_BOOTTIME) in milliseconds when the line was made:
	// boot-to-ready time on a device.
	UptimeMS int64 `json:"uptime_ms"`
}

// ReadyLine formats the ready line, newline included.
func ReadyLine(info ReadyInfo) string {
	if info.Services == nil {
		info.Services = []string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(info) // cannot fail: strings, a slice of strings and an int
	return ReadyMarker + buf.String()
}

// ParseReadyLine finds the ready line in a console line (which may carry noise before the
// marker, such as escape sequences) and decodes it.
func ParseReadyLine(line string) (ReadyInfo, error) {
	i := strings.Index(line, ReadyMarker)
	if i < 0 {
		return ReadyInfo{}, errors.New("ready line: no " + strings.TrimSpace(ReadyMarker) + " marker")
	}
	rest := strings.TrimRight(line[i+len(ReadyMarker):], "\r\n")
	dec := json.NewDecoder(strings.NewReader(rest))
	dec.DisallowUnknownFields()
	var info ReadyInfo
	if err := dec.Decode(&info); err != nil {
		return ReadyInfo{}, fmt.Errorf("ready line: %w", err)
	}
	if dec.More() {
		return ReadyInfo{}, errors.New("ready line: trailing data after the JSON object")
	}
	if info.Board == "" || info.Version == "" {
		return ReadyInfo{}, errors.New("ready line: board and version are required")
	}
	if info.Services == nil {
		return ReadyInfo{}, errors.New("ready line: services is required")
	}
	return info, nil
}
