package meshproto

import (
	"time"

	"meshroot/radio/chanplan"
)

// RadioReport is a node's periodic report to the gateway (TypeRadioReport).
type RadioReport struct {
	Node   string        `json:"node"`
	At     time.Time     `json:"at"`
	Radios []RadioStatus `json:"radios"`
}

// RadioStatus is one radio in a report: the planner's view of it (channels, current channel,
// load, every BSS it heard — ours included — and its survey) plus the BSSIDs it serves, so the
// gateway can tell our radios from foreign ones.
type RadioStatus struct {
	Radio  chanplan.Radio `json:"radio"`
	BSSIDs []string       `json:"bssids,omitempty"`
}

// ChannelPlan tells a node to move radios (TypeChannelPlan).
type ChannelPlan struct {
	ID    uint64 `json:"id"`
	Moves []Move `json:"moves"`
}

// Move is one radio's new channel.
type Move struct {
	Radio string        `json:"radio"`
	Spec  chanplan.Spec `json:"spec"`
	// Forced moves (radar, regulation) go at once; others too, but may wait for the radio's
	// clients to be idle.
	Forced bool `json:"forced,omitempty"`
}

// Radar reports radar seen by a radio (TypeRadar).
type Radar struct {
	Radio string        `json:"radio"`
	Spec  chanplan.Spec `json:"spec"`
	At    time.Time     `json:"at"`
	// MovedTo is where the radio went at once (zero if it could not move).
	MovedTo chanplan.Spec `json:"moved_to,omitzero"`
}

// PlanResult acknowledges one move of a ChannelPlan (TypePlanResult).
type PlanResult struct {
	Plan  uint64        `json:"plan"`
	Radio string        `json:"radio"`
	Spec  chanplan.Spec `json:"spec"`
	OK    bool          `json:"ok"`
	Error string        `json:"error,omitempty"`
}
