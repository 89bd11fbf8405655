// Package firmware is the device runtime: the supervisor that u-root's init starts, the service
// graph with restart and backoff, the config store, logging, the watchdog and the ready line.
// It is the one place that wires board, provision, vpn, radio and ota together; those domains
// register as services through a small interface and never import each other.
//
// # Services
//
// A Service has a Name, the names of the services it depends on (Deps), and Run(ctx, up): it
// calls up once it is doing its job and returns when ctx is cancelled. The Supervisor starts a
// service when all its dependencies are up, restarts one that returns (or panics) with
// exponential backoff (1 s doubling to 1 min; reset after 30 s up), marks one that returns a
// Permanent error as failed (and its waiting dependents with it), and on shutdown cancels
// dependents before their dependencies, services implementing StopLaster (the watchdog) last,
// within a deadline. Status reports each service's state, restarts and last error.
// Later domains add their services through Options.Services, which receives the Device (board,
// release, logger, and the config store once "data" is up).
//
// # Boot (Run with Options.Boot, what meshd does as uinit)
//
//  1. mount proc, sys, devtmpfs, devpts, tmpfs /tmp and /run (skipping what u-root's init
//     already mounted);
//  2. detect the board (device tree or DMI); unknown hardware logs what was read and falls back
//     to board.Generic (first Ethernet port WAN, the others bridged as LAN, settings in RAM);
//  3. load the board's kernel modules from /lib/modules/$(uname -r)/modules.dep with
//     finit_module, dependencies first;
//  4. set the host name, bring lo up, write /run/meshd.pid;
//  5. start the built-in services: "data" (mounts the board's data partition at /data, a tmpfs
//     if that fails, and opens the config store in /data/config), "lan" (br-lan with the LAN
//     ports and 192.168.1.1/24 or the stored "lan" document; ports that appear later join),
//     "watchdog" (arms /dev/watchdog, feeds it while the supervisor answers, magic-closes it on
//     a clean stop) and "console" (u-root's shell on the console, respawned: u-root's init
//     would only start its own shell after meshd exits);
//  6. print the ready line when every service settled:
//     MESHROOT-READY {"board":"qemu-virt-arm64","version":"0.1.0","services":["data","lan","watchdog","console"],"uptime_ms":2345}
//     (one line; uptime_ms is the kernel's uptime, i.e. boot to ready).
//
// On the device, meshd adds the router's services through Options.Services (firmware/device):
// firewall (firmware/router/nft), wan (firmware/router/wan), dhcp (firmware/router/dhcpd), dns
// (firmware/router/dns), status (firmware/status: GET /status and /metrics on the LAN),
// provision (provision/agent), vpn (firmware/vpnhook), ota (ota.Updater) and logship
// (firmware/logship); firmware/sitelab runs the image in a virtual site for the VM tests.
//
// Stopping: cancelling Run's context (SIGTERM/SIGINT in meshd) stops the services and returns
// (meshd exits; u-root's init then starts its shell). Options.Actions (SIGUSR1, SIGUSR2) stop
// them and then reboot or power off. Request (meshd -poweroff/-reboot/-halt) sends the signal
// to the meshd named in /run/meshd.pid.
//
// # Files
//
// /etc/meshroot/release is written by the image builder (see Release):
//
//	{"version": "0.1.0", "board": "qemu-virt-arm64", "built": "2026-11-22T10:00:00Z"}
//
// The config store keeps <name>.json documents in /data/config with atomic, durable writes.
//
// Everything that touches the kernel (mounts, modules, netlink, the watchdog, reboot, host
// name) goes through System, whose fields have real implementations and fakes (FakeMounter,
// FakeModuleKernel, FakeNet, FakeWatchdog, FakePower); Run takes a root directory, so the whole
// boot runs in tests against a temporary tree.
package firmware
