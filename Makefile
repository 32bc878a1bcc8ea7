# gobuildcache: see README.md and TESTING.md.
GO ?= go
BIN := builds/gobuildcache
# Where the benchmarks' MinIO keeps its data: tmpfs where there is one, off
# the disk the benchmark's jobs build on (see scripts/minio.sh); empty: the
# temp dir.
BENCH_MINIO_DATA ?= $(if $(wildcard /dev/shm/.),/dev/shm)
BENCH_MINIO := MINIO_DATA_PARENT=$(BENCH_MINIO_DATA) scripts/minio.sh

.PHONY: build test cross test-newest-go test-short lint fuzz bench-local clean

# Static, as the releases: a cgo-linked binary needs the build machine's libc
# and fails to start under some address-space limits (ulimit -v) where the
# go command runs (see README, Troubleshooting).
build: ## build the binary into builds/gobuildcache
	CGO_ENABLED=0 $(GO) build -o $(BIN) .

test: build cross ## the whole test suite, as CI runs it: vet, cross builds, the tests with MinIO for S3, the end-to-end tests under the newest Go, the chaos suite's CI variant
	$(GO) vet ./...
	scripts/minio.sh run -- env GOBUILDCACHE_REQUIRE_S3=1 $(GO) test -race -count=1 -v -timeout 45m ./...
	$(MAKE) test-newest-go
	scripts/toxiproxy.sh install >/dev/null
	$(GO) run ./chaos -quick -bin $(BIN)

cross: ## vet for macOS and Windows, and build the binary for both
	GOOS=darwin $(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null .
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null .

# The newest Go release, fetched by the go command from the module proxy.
GO_NEWEST ?= go1.27.3
test-newest-go: ## the end-to-end tests with the real go command, under GO_NEWEST
	GOTOOLCHAIN=$(GO_NEWEST) $(GO) test -count=1 -v -timeout 20m -run 'TestEndToEndGoCommand$$|TestEndToEndBareVariablesOfOtherTools$$' .

test-short: ## unit tests only: no go command, no 64 MiB objects, no MinIO (S3 tests skip)
	$(GO) test -race -short ./...

lint: ## formatting and vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

FUZZTIME ?= 60s
fuzz: ## run every fuzz target for FUZZTIME each
	for t in FuzzParseRequest FuzzRequestStream FuzzBodyDecoder FuzzBase64Reader FuzzActionRecord FuzzS3Metadata FuzzManifest FuzzPackDamage; do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done

bench-local: build ## warm go build std on gobuildcache vs the plain Go cache, and put memory
	$(GO) run ./bench -bin $(BIN)

.PHONY: bench bench-s3 bench-quick
bench: bench-s3 ## the S3 benchmark on MinIO behind toxiproxy, then the CI replay as a section of its report (see TESTING.md); 20-35 min on a 2-core machine, plus the replay's 14-25 min
	$(BENCH_MINIO) run -- $(GO) run ./bench -ci -ci-into-latest -bin $(BIN)

bench-s3: build ## the S3 benchmark alone (latest.md without the CI replay's section)
	scripts/toxiproxy.sh install >/dev/null
	$(BENCH_MINIO) run -- $(GO) run ./bench -s3 -bin $(BIN)

bench-quick: build ## the S3 benchmark, smaller workload and fewer runs: under 5 min on 2 cores
	scripts/toxiproxy.sh install >/dev/null
	$(BENCH_MINIO) run -- $(GO) run ./bench -s3 -quick -bin $(BIN)

.PHONY: bench-ci bench-ci-quick
bench-ci: build ## the CI replay: seven CI runs of a real module, no cache vs tar-and-restore vs gobuildcache on MinIO behind toxiproxy (see TESTING.md); target under 25 min on 2 cores: 22m35s in the committed run (an AMD EPYC VM at a slow hour, a cold build of 81 s); the whole make bench-ci 22m40s there, 12m2s at a fast hour (a cold build of 43 s), 17m7s-22m40s at slower hours; two rounds per job, third rounds at most 2 minutes in all
	scripts/toxiproxy.sh install >/dev/null
	$(BENCH_MINIO) run -- $(GO) run ./bench -ci -bin $(BIN)

bench-ci-quick: build ## the CI replay's runs (1), (2), (4), (5), gobuildcache at 10 ms only, no gobuildcache mtimes row; about 3 min
	scripts/toxiproxy.sh install >/dev/null
	$(BENCH_MINIO) run -- $(GO) run ./bench -ci -quick -bin $(BIN)

clean:
	rm -rf builds

.PHONY: chaos
chaos: build ## the chaos suite: 8 "VMs" build and test on MinIO behind toxiproxy under injected faults (see TESTING.md); 5-10 min on 2 cores
	scripts/minio.sh install >/dev/null && scripts/toxiproxy.sh install >/dev/null && $(GO) run ./chaos -bin $(BIN)

.PHONY: bench-mtimes
bench-mtimes: build ## `gobuildcache mtimes` on a generated 50,000-file git work tree (make bench runs it too); writes bench-results/mtimes.md
	$(GO) run ./bench -mtimes -bin $(BIN)
