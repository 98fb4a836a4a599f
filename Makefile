# SPDX-License-Identifier: MIT
# Tributary: thin wrappers over meson and ninja. `make demo` and `make test` work on a fresh
# Debian 12 machine as root: they install what is missing first (scripts/deps.sh; the demo only
# what the build needs, the tests also curl, iproute2, numpy, and node and npm for tests/k8s).

BUILD      ?= build
TEST_BUILD ?= build-test
# CI builds with -Werror; so does every `make test`.
WERROR     ?= $(if $(CI),true,false)

.PHONY: all deps deps-test build demo test bench example example-secagg example-lora image-test clean

all: build

deps:
	@./scripts/deps.sh

deps-test:
	@./scripts/deps.sh --test

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release -Dwerror=$(WERROR)

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD)

demo: build
	@./scripts/demo.sh $(BUILD)

# Unit, integration and end-to-end tests, built with ASan + UBSan and -Werror.
$(TEST_BUILD)/build.ninja:
	meson setup $(TEST_BUILD) --buildtype=debugoptimized -Dsanitize=true -Dwerror=true

test: deps-test $(TEST_BUILD)/build.ninja
	@ninja -C $(TEST_BUILD)
	@./scripts/run-tests.sh $(TEST_BUILD)

bench: build
	@./scripts/bench.sh $(BUILD)

# Federated training of a PyTorch model on digits through Tributary (installs torch and sklearn).
# ARGS go to train.py: `make example ARGS=--secagg` (or `make example-secagg`) runs it with
# secure aggregation (SecAgg+); `make example ARGS="--seed 3 --mode native"`.
example: build
	@./scripts/deps-example.sh && ./scripts/example.sh $(BUILD) $(ARGS)

example-secagg: build
	@./scripts/deps-example.sh && ./scripts/example.sh $(BUILD) --secagg $(ARGS)

# Federated LoRA fine-tuning of a tiny transformer, ranks 2, 4 and 8: FLoRA against the
# zero-padded average of A and B, both through Tributary (examples/lora-transformer; torch from
# Debian, data generated locally, nothing downloaded).
example-lora: build
	@./scripts/deps-example.sh && ./scripts/example-lora.sh $(BUILD)

# The image built with podman and run as the rendered manifests say (user, capabilities, seccomp,
# read-only root, volumes): a controller and three nodes under simulate, one node killed. Not in
# `make test`: about 2 minutes, more on the first run (debootstrap of the base image). Root only.
image-test:
	@./scripts/deps-k8s.sh && ./scripts/deps-image.sh
	@/usr/bin/python3 scripts/image-test.py

clean:
	rm -rf $(BUILD) $(TEST_BUILD)
