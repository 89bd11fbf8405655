// Package chanplan plans the Wi-Fi channels of a whole mesh site on the gateway, and reproduces
// hostapd's automatic channel selection (ACS) as the baseline to beat.
//
// # Channel model
//
// A Spec is a primary 20 MHz channel, a width (20/40/80/160 MHz) and the centre of the bonded
// channel, restricted to the blocks of IEEE 802.11 Annex E. ChannelState carries what regulation
// and radar allow per 20 MHz channel (nl80211's disabled / no-IR / radar flags, width limits,
// the DFS state, the end of the radar non-occupancy period, the last radar). Allowed says
// whether a Spec is unusable, needs a CAC (a DFS channel not yet cleared: an outage of a minute or
// more), or is usable at once.
//
// # hostapd's ACS (acs.go)
//
// ACS computes hostapd's survey interference factor and channel ranking exactly as
// src/ap/acs.c does (interference factor from noise floor and busy/tx time normalised by the
// lowest noise floor; sum over the bonded subchannels with the primary moved to the quietest one
// on 5/6 GHz; on 2.4 GHz the ±5 MHz and ±10 MHz neighbours weighted 0.85 and 0.55 and the total
// divided by the weight; channels 1/6/11 biased by 0.8). The tests check it against hostapd's own
// example printout and hand-computed cases.
//
// # Cost model (model.go)
//
// Every one of our radios r on channel s pays
//
//	C_r(s) = Σ_foreign b  g(S_rb)·ℓ_b·O(s, s_b)            foreign BSSes it hears
//	       + Σ_residual f u_r(f)·O(s, f)                   survey busy time nothing above explains
//	       + Σ_ours q     g(S_rq)·ℓ_q·O(s, s_q)            our other radios it hears
//	       + β·(1 − width/MaxWidth) [+ CAC] [+ recent radar]
//
// weighted by the radio's weight. g(S) is the contention weight of a transmitter heard at S dBm:
// 1 at or above the −82 dBm preamble-detect threshold, falling with its power below. ℓ is the
// transmitter's airtime (BSS Load / our own traffic, at least 5% for beacons). O(s, t) is the
// overlap of channel t on channel s: half how strongly t reaches s's primary (where carrier sense
// turns any overlap into full contention), half the mean over s's subchannels (a busy secondary
// costs the bandwidth it blocks); partial overlap of 2.4 GHz channels uses the measured
// interference factors of partially overlapped channels (Mishra et al. 2006), adjacent 5/6 GHz
// channels leak at −20 dB. The width penalty makes "halve the width" cost what a fully contending
// co-channel neighbour at 50% load costs, so the planner narrows a channel only when that avoids
// more interference than it loses. Moving onto a DFS channel that needs a CAC costs extra (2),
// and so does a channel with radar in the last 24 h (3). Total cost is the sum over radios; the
// same function (Evaluate) scores our plans, hostapd's ACS and the optimum.
//
// # Search (planner.go)
//
// Radios that must share a channel (a Group, e.g. a wireless backhaul) form one unit. The unit
// graph has an edge wherever two of our radios hear each other. Solve:
//
//  1. lists every unit's candidate channels (regulation, width limits, DFS capability; a forced
//     unit — radar, a channel that became illegal — only gets channels usable at once; a fixed
//     unit keeps its channel);
//  2. builds start assignments: the current one, and greedy ones (most constrained and most
//     coupled units first, then deterministic shuffles seeded by a hash of the input), each
//     improved by best-response local search until no single unit can improve;
//  3. tries joint moves of coupled pairs to leave local minima;
//  4. solves every connected component of at most 6 units exactly by depth-first branch and
//     bound: each unassigned unit keeps the vector of its candidates' costs against what is
//     assigned, and the bound adds each vector's minimum (pair costs are never negative).
//
// Ties always keep the current channel and then the lowest index, and every map is walked in
// sorted order, so the same input gives the same plan. On the benchmark buildings the heuristic
// alone is within 1% of the exact optimum on average and a 60-radio site plans in tens of
// milliseconds.
//
// # Hysteresis (policy.go, smooth.go)
//
// Smoother averages reports (EWMA, τ = 2 h) so that one noisy survey cannot move a channel.
// Policy.Decide always makes forced moves (to channels usable at once, so radar never leaves a
// radio down). Other moves need, per band (bands do not interact): a total gain of 30%, or one
// radio gaining 5 dB with none losing more than 3 dB; they are never made in the site's busy hour
// (LoadProfile learns it) and never twice within 24 h for one radio; of an accepted plan the
// changes that add little are reverted, so as few radios as possible switch.
package chanplan
