# xmppd — the two README commands and a few more.  Everything goes through
# scripts/deps first, so a fresh Debian machine needs nothing but `make`.
#
#   make run         build and start xmppd on the embedded defaults (no config)
#   make test        sanitizer build, unit + integration + TSan tests
#   make build       release-ish build in build/
#   make fuzz-smoke  each libFuzzer target for $(FUZZ_SECONDS) s
#   make bench       micro-benchmarks (release build)
#   make docs        regenerate docs/configuration.md from the option tables

MESON  ?= meson
NINJA  ?= ninja
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON := /usr/bin/python3
FUZZ_SECONDS ?= 60
CONFIG ?=

.PHONY: all deps build run test test-unit test-integration fuzz-smoke bench docs clean

all: build

deps:
	@scripts/deps

build/build.ninja:
	$(MESON) setup build --buildtype=debugoptimized

build: deps build/build.ninja
	@$(NINJA) -C build -j $(JOBS)

run: build
	./build/xmppd $(if $(CONFIG),--config $(CONFIG))

# The test build: ASan + UBSan, debug asserts on.
build-test/build.ninja:
	$(MESON) setup build-test --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

# ThreadSanitizer build for the threaded units and a TSan pass of the integration tests.
build-tsan/build.ninja:
	CC=clang $(MESON) setup build-tsan --buildtype=debug -Db_sanitize=thread -Db_lundef=false

test: deps build-test/build.ninja build-tsan/build.ninja
	@$(NINJA) -C build-test -j $(JOBS)
	@$(NINJA) -C build-tsan -j $(JOBS)
	@$(PYTHON) tools/run-tests --build build-test --tsan-build build-tsan

test-unit: deps build-test/build.ninja
	@$(NINJA) -C build-test -j $(JOBS)
	@$(PYTHON) tools/run-tests --build build-test --only unit

test-integration: deps build-test/build.ninja
	@$(NINJA) -C build-test -j $(JOBS)
	@$(PYTHON) tools/run-tests --build build-test --only integration

build-fuzz/build.ninja:
	CC=clang $(MESON) setup build-fuzz --buildtype=debugoptimized -Dfuzz=true \
	  -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link

fuzz-smoke: deps build-fuzz/build.ninja
	@$(NINJA) -C build-fuzz -j $(JOBS)
	@scripts/fuzz-smoke build-fuzz $(FUZZ_SECONDS)

build-release/build.ninja:
	$(MESON) setup build-release --buildtype=release

bench: deps build-release/build.ninja
	@$(NINJA) -C build-release -j $(JOBS)
	@scripts/bench build-release

docs: build
	./build/tools/gen-docs > docs/configuration.md
	./build/tools/gen-docs --hooks > docs/hooks.md

clean:
	rm -rf build build-test build-tsan build-fuzz build-release
