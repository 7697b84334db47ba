# One command to set up and run, one to set up and test. Both work on a
# fresh Debian 12 machine: they apt-get what is missing (as root or with sudo).
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
APT_PACKAGES := g++ make libboost-dev libboost-log-dev libthrift-dev thrift-compiler zlib1g-dev libgtest-dev wrk
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CTEST_DIR := build/ctest

.PHONY: all system-deps venv install run test test-cpp test-python bench clean dev fuzz

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

# End-to-end and unit tests against the installed package.
test-python: install
	$(VENV)/bin/python -m pytest

bench: install
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
