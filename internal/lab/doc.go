// Package lab builds network-namespace labs for integration tests, benchmarks and `make run`:
// namespaces joined by veth pairs, the concentrator peer (strongSwan charon with kernel-libipsec and
// FRR bgpd, configured from Go), iperf3, the reference cloud, and QEMU routers on TAP devices.
// Every lab names its namespaces uniquely, tracks the processes it starts by PID, and tears down
// everything it made, also when a test fails.
package lab
