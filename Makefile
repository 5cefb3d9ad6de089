# passbridge — build, test, benchmark.
#   make test    installs missing Debian packages (as root), then vet + the whole suite
#   make build   builds ./bin/passbridge
#   make race    the whole suite under the race detector
#   make bench   runs the benchmarks (see bench/README.md)
#   make lint    go vet, gofmt, staticcheck, govulncheck
#   make fuzz    every fuzz target for FUZZTIME (default 30s) each, one after another

GO       ?= go
PKG      := github.com/passbridge/passbridge
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT)
TEST_TIMEOUT ?= 25m

.PHONY: all build test test-deps vet race bench lint fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/passbridge ./cmd/passbridge

test-deps:
	./scripts/install-test-deps

vet:
	$(GO) vet ./...

# Under make test a missing server binary is a failure, never a silent skip.
test: test-deps vet
	PASSBRIDGE_TEST_REQUIRE_SERVERS=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# The whole suite under the race detector (about 4x slower than make test).
race: test-deps
	PASSBRIDGE_TEST_REQUIRE_SERVERS=1 $(GO) test -race -count=1 -timeout 40m ./...

bench: test-deps
	PASSBRIDGE_TEST_REQUIRE_SERVERS=1 $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

lint: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	@# govulncheck needs the vulnerability database at vuln.go.dev; on a
	@# machine without that network it says so instead of failing the lint.
	@$(GO) run golang.org/x/vuln/cmd/govulncheck@v1.9.0 ./... >/tmp/passbridge-govulncheck.log 2>&1 && cat /tmp/passbridge-govulncheck.log || { \
	  if grep -q 'fetching vulnerabilities' /tmp/passbridge-govulncheck.log; then \
	    echo "govulncheck: SKIPPED, vulnerability database unreachable: $$(grep -o 'dial tcp.*' /tmp/passbridge-govulncheck.log)"; \
	  else cat /tmp/passbridge-govulncheck.log; exit 1; fi; }

# Every FuzzXxx of the module in turn (scripts/fuzz lists them with grep),
# each for FUZZTIME with FUZZPARALLEL workers; prints executions and
# crashes per target and fails on a crash (its input stays in the package's
# testdata/fuzz/ for the normal tests to replay).
FUZZTIME     ?= 30s
FUZZPARALLEL ?= 1
fuzz:
	FUZZTIME=$(FUZZTIME) FUZZPARALLEL=$(FUZZPARALLEL) GO=$(GO) ./scripts/fuzz

clean:
	rm -rf bin
