# Meshroot: the two set-up commands are `make run` and `make test` (README.md).
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false

GO      ?= go
BOARD   ?= qemu-virt-arm64
CACHE   ?= $(CURDIR)/.cache
OUT     ?= $(CURDIR)/out
# Test/bench knobs: TESTFLAGS for extra `go test` flags, PKG to narrow the packages.
PKG       ?= ./...
TESTFLAGS ?=
BENCH     ?= .

export MESHROOT_CACHE := $(CACHE)

.PHONY: all deps kernels arm64-userland tools run image test unit lint bench fuzz clean

all: test

## deps: install the Debian packages (strongSwan, FRR, QEMU, hostapd, U-Boot tools...) and kernels
deps: kernels arm64-userland
	@./scripts/install-deps.sh

kernels:
	@./scripts/fetch-kernels.sh $(CACHE)/kernel

## arm64-userland: Debian's arm64 hostapd, wpa_supplicant, iw and their libraries, unpacked into
## $(CACHE)/sysroot-arm64 for arm64 images (image.Program resolves their libraries there)
arm64-userland: kernels
	@./scripts/fetch-arm64-userland.sh $(CACHE)/sysroot-arm64

## tools: build meshctl/meshd/meshcloud into out/bin
tools:
	@mkdir -p $(OUT)/bin
	$(GO) build -o $(OUT)/bin/ ./cmd/...

## image: build the firmware image for BOARD into out/<board>/
image: kernels tools
	$(OUT)/bin/meshctl image build --board $(BOARD) -o $(OUT)/$(BOARD)

## run: the virtual site (root): build the arm64 image, start the concentrator (two strongSwan +
## FRR endpoints, a VPC host), the ISP and the reference cloud, boot the router in QEMU, onboard it
## with the app simulator, show live status until Ctrl-C, then tear everything down
## (`meshctl site console` attaches to the router's console; files in $(OUT)/run/)
run: deps tools
	$(OUT)/bin/meshctl run --board $(BOARD) --out $(OUT)

## lint: gofmt, go vet, staticcheck (pinned in go.mod as a tool)
lint:
	@fmt=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$fmt" ]; then echo "gofmt needed on:"; echo "$$fmt"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## unit: the fast tests only (no root, no QEMU, no namespaces)
unit:
	$(GO) test -short -race $(TESTFLAGS) $(PKG)

## test: everything, against the real peers (root: namespaces, strongSwan, FRR, QEMU)
test: deps lint
	$(GO) test -race -timeout 40m $(TESTFLAGS) $(PKG)

## bench: benchmarks, including the lab and VM ones (numbers for the closing notes)
bench: deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime 1x -timeout 60m $(TESTFLAGS) $(PKG)

## fuzz: run every fuzz target for FUZZTIME each (default 20s)
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list $(PKG)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(OUT)
