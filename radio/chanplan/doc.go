// Package chanplan plans Wi-Fi channels for a whole mesh.
package chanplan
