# hull: build, guest image, tests, demo. `make help` lists the targets.
GO        ?= go
BIN       ?= bin
IMAGE_DIR ?= /var/lib/hull/image
IMAGE_9P_DIR ?= $(IMAGE_DIR)-9p
IMAGE_TUNED_DIR ?= $(IMAGE_DIR)-tuned
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
AGENT_LDFLAGS := -s -w -extldflags "-static" -X github.com/hullrt/hull/internal/guest.Version=$(VERSION)

export PATH := $(PATH):/usr/local/go/bin

.PHONY: all deps kernel-deps build hull agent shim crictl image image-9p kernel image-tuned test unit integration demo proto lint clean help

all: build

deps: ## install the Debian packages hull needs (root)
	scripts/install-deps.sh

build: hull agent shim ## build hull, the static hull-agent and the containerd shim into bin/

hull:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/hull ./cmd/hull

shim:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/containerd-shim-hull-v2 ./cmd/containerd-shim-hull-v2

# The agent is PID 1 of the guest: static, with libcontainer's cgo nsenter.
agent:
	CGO_ENABLED=1 $(GO) build -tags 'netgo osusergo' -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/hull-agent ./cmd/hull-agent

# crictl drives the CRI tests; no package or prebuilt binary is at hand.
crictl: ## build crictl from source into $(BIN) (skipped when there)
	BIN=$(abspath $(BIN)) scripts/build-crictl.sh

image: build ## build the guest image (kernel + initrd) into $(IMAGE_DIR)
	$(BIN)/hull image build --output $(IMAGE_DIR)

# The cloud kernel has no 9p: this image boots the generic kernel.
image-9p: build ## build a guest image that mounts virtio-9p (generic kernel) into $(IMAGE_9P_DIR)
	$(BIN)/hull image build --shared-fs virtio-9p --output $(IMAGE_9P_DIR)

# The tuned kernel is opt-in: neither deps nor demo nor CI builds it.
kernel-deps: ## install what building the tuned kernel needs: linux-source, compiler, bison, flex... (root)
	scripts/install-kernel-deps.sh

kernel: build kernel-deps ## build the tuned guest kernel from linux-source into the kernel cache (5-15 min on 2 cores; cached)
	$(BIN)/hull image kernel

image-tuned: kernel ## build a guest image that boots the tuned kernel into $(IMAGE_TUNED_DIR)
	$(BIN)/hull image build --kernel tuned --output $(IMAGE_TUNED_DIR)

unit: ## unit tests (no root, no VMs)
	$(GO) test ./...

integration: deps image image-9p crictl ## integration tests: real QEMU VMs (root)
	HULL_TEST_BIN=$(abspath $(BIN)) HULL_TEST_IMAGE_DIR=$(IMAGE_DIR) HULL_TEST_IMAGE_9P_DIR=$(IMAGE_9P_DIR) $(GO) test -count=1 -v -timeout 30m ./test/...

test: unit integration ## everything CI runs

demo: deps image ## run a busybox container in a VM and show that it is one
	test/demo.sh $(abspath $(BIN))

PROTOC_GEN_GO       ?= google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_TTRPC ?= github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.7

proto: ## regenerate api/agent/v1 from agent.proto (protoc from protobuf-compiler)
	GOBIN=$(abspath $(BIN))/tools $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(abspath $(BIN))/tools $(GO) install $(PROTOC_GEN_GO_TTRPC)
	cd api/agent/v1 && PATH=$(abspath $(BIN))/tools:$$PATH $(GO) generate ./

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: ## gofmt, go vet and staticcheck
	gofmt -l . | (! grep .)
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN)

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
