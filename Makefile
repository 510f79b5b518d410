# sealift build, test and demo entry points. Everything runs on a fresh
# Debian machine after .ci/setup (which .ci/run calls).
GO      ?= go
BIN     := bin/sealift
PKGS    := ./...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test lint demo bench clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sealift

# Interop tests need the real tools; SEALIFT_REQUIRE_TOOLS=1 turns a missing
# tool into a failure instead of a skip.
test: build lint
	SEALIFT_REQUIRE_TOOLS=1 $(GO) test -count=1 -timeout 30m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

demo: build
	$(GO) run ./cmd/sealift-demo --sealift $(BIN)

bench: build
	$(GO) run ./cmd/sealift-bench --sealift $(BIN)

clean:
	rm -rf bin

# Boots sealift-built disks under qemu + OVMF (TCG unless SEALIFT_E2E_KVM=1):
# A->B update on a real kernel with a dm-verity root, then the node as it
# ships (a Debian systemd root updating itself from a registry in a network
# namespace; needs root). Needs bash e2e/setup.sh.
.PHONY: e2e
e2e:
	$(GO) test -tags e2e -count=1 -timeout 70m -v ./e2e/
