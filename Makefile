# baton: `make demo` and `make test` are the whole set-up on a fresh Debian
# machine with Go. Both install what is missing (haproxy and nginx from
# Debian, staticcheck from the Go module proxy).

GO          ?= go
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
# urfave/cli's man-page generator (and its markdown parser) is not used:
# leaving it out, and building without cgo (a static binary: no dynamic
# loader, no libc), saves every baton command, `baton reload` included,
# part of its start-up (about 4 ms of 20 here).
TAGS        := urfave_cli_no_docs
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEMO_DIR     ?= /tmp/baton-demo
DEMO_CONTROL := $(DEMO_DIR)/baton.sock

.PHONY: all build dist deps build-deps proxies matrix tools lint test unit integration fuzz demo bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/baton ./cmd/baton

# Release files in dist/: static linux/amd64 and linux/arm64 binaries, a
# .deb and an .rpm of each (nfpm, from the Go module proxy), SHA256SUMS.
dist:
	GO=$(GO) VERSION=$(VERSION) scripts/dist

# haproxy and nginx from Debian, only when missing.
deps:
	@if ! command -v haproxy >/dev/null || ! command -v nginx >/dev/null; then \
		echo "installing haproxy and nginx (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx; \
	fi

# What scripts/proxies needs to build the upstream releases.
build-deps:
	@if ! dpkg -s build-essential libssl-dev libpcre2-dev zlib1g-dev liblua5.4-dev >/dev/null 2>&1; then \
		echo "installing the proxies' build dependencies (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential libssl-dev libpcre2-dev zlib1g-dev liblua5.4-dev; \
	fi

# Verify and build the upstream HAProxy and nginx releases of the version
# matrix (../shared/proxy-src, or PROXY_SRC) once each into a cache outside
# the tree (BATON_PROXY_CACHE, default ~/.cache/baton-proxies); prints the
# manifest. Reused while the tarball and the build flags are unchanged.
proxies: build-deps
	scripts/proxies build

# The version matrix: the essential integration tests for every version
# (Debian's and the built ones), then docs/compat.md. Fails if any check
# failed on any version.
matrix: deps build-deps
	scripts/matrix

tools:
	@[ -x $(STATICCHECK) ] || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) vet -tags batondocs ./cmd/baton
	$(STATICCHECK) -tags batondocs ./cmd/baton

# Unit and in-process tests first, then the end-to-end tests with real
# haproxy/nginx one package at a time (they measure, and share 2 cores).
test: deps lint
	$(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v '/integration$$')
	$(GO) test -race -count=1 -timeout 15m -p 1 ./integration/

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/integration$$')

integration: deps
	$(GO) test -race -count=1 -timeout 15m -p 1 -v ./integration/

# Each fuzz target (PACKAGE:FUNCTION) for FUZZTIME; .ci/run calls it after
# `make test`, which replays the seed corpora (testdata/fuzz/) as plain tests.
# A failure leaves the failing input in the package's testdata/fuzz/.
FUZZTIME     ?= 8s
FUZZ_TARGETS := supervisor:FuzzHandoverDecode supervisor:FuzzReadState proxyctl:FuzzNginxDump

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=./$${t%%:*}/; fn=$${t##*:}; \
		echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	done

# The same load and reload storms against baton and against HAProxy's and
# nginx's own reloads, plus reload latency, kill -9, steady state and scale
# (bench/cmd/storm). The full run (under 15 minutes on 2 cores) writes
# docs/BENCHMARKS.md, docs/bench.json and docs/bench-storm.svg; QUICK=1
# (under 2 minutes) writes them to bin/bench-quick/ and leaves docs/ alone.
# HAProxy is $BATON_HAPROXY or the one in PATH, nginx $BATON_NGINX or the
# one in PATH; BENCH_HAPROXY lists more HAProxy binaries for the reload
# latency per version (default: the 3.1+ builds scripts/proxies has already
# made; nothing is built here). The big-config and during-reload scenarios
# run on the first HAProxy of 3.1 or later.
BENCH_HAPROXY ?= $(shell scripts/proxies manifest 2>/dev/null | awk '$$1=="haproxy" && $$2 ~ /^(3\.[1-9]|[4-9]\.)/ {print $$3}')
ifeq ($(QUICK),)
BENCH_OUT   ?= docs
BENCH_FLAGS :=
else
BENCH_OUT   ?= bin/bench-quick
BENCH_FLAGS := --quick
endif

bench: deps
	@mkdir -p $(BENCH_OUT)
	$(GO) run ./bench/cmd/storm bench $(BENCH_FLAGS) --json $(BENCH_OUT)/bench.json \
		--haproxy "$${BATON_HAPROXY:-haproxy}" $(addprefix --haproxy ,$(BENCH_HAPROXY)) \
		--markdown $(BENCH_OUT)/BENCHMARKS.md --svg $(BENCH_OUT)/bench-storm.svg

# Runs baton in the foreground supervising HAProxy on 127.0.0.1:8080 with
# examples/haproxy/haproxy.cfg. Ctrl-C drains and stops it.
demo: deps build
	@mkdir -p $(DEMO_DIR)
	@cp examples/haproxy/haproxy.cfg $(DEMO_DIR)/haproxy.cfg
	@echo
	@echo "baton is starting HAProxy on http://127.0.0.1:8080 (config: $(DEMO_DIR)/haproxy.cfg)"
	@echo "Try, from another terminal:"
	@echo "  curl -i http://127.0.0.1:8080/"
	@echo "  bin/baton status -c $(DEMO_CONTROL)"
	@echo "  sed -i 's/v1/v2/g' $(DEMO_DIR)/haproxy.cfg && bin/baton reload -c $(DEMO_CONTROL)"
	@echo "  curl -i http://127.0.0.1:8080/            # now answers v2"
	@echo "  echo bogus >> $(DEMO_DIR)/haproxy.cfg && bin/baton reload -c $(DEMO_CONTROL)   # fails, v2 keeps serving"
	@echo "  kill -9 <worker pid from status>; curl http://127.0.0.1:8080/   # replaced at once"
	@echo "  bin/baton stop -c $(DEMO_CONTROL)         # or Ctrl-C here"
	@echo
	bin/baton run --log-format console -c $(DEMO_CONTROL) \
		--listen tcp://127.0.0.1:8080 -- haproxy -f $(DEMO_DIR)/haproxy.cfg

clean:
	rm -rf bin dist
