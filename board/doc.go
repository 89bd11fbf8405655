// Package board is the catalog of hardware Meshroot runs on and the detection of the board it is
// running on: CPU class, radios (phy, band, width, DFS), Ethernet ports and their WAN/LAN roles,
// LEDs, buttons, the flash layout with A/B slots and a persistent data area, and where the
// bootloader environment lives. Detection reads the device tree or DMI through an injectable root.
package board
