// Package firmware is the device runtime: the supervisor that u-root's init starts, the service
// graph with restart and backoff, the config store, logging, the watchdog and the ready line.
// It is the one place that wires board, provision, vpn, radio and ota together; those domains
// register as services through a small interface and never import each other.
package firmware
