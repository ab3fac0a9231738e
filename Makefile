# Bunker: the two set-up commands are `bash scripts/install-deps.sh && make demo` and
# `bash scripts/install-deps.sh && make test` (see README.md).
JOBS      ?= $(shell nproc)
BUILD     ?= build/release
ASAN      ?= build/asan
WERROR    ?= $(if $(CI),ON,OFF)
# -G Ninja for a build dir not yet configured, decided in the recipe (after deps installed ninja);
# a configured one keeps the generator of its CMakeCache.txt (cmake refuses another).
cmake_gen = $$([ -f $(1)/CMakeCache.txt ] || ! command -v ninja >/dev/null 2>&1 || echo -G Ninja)

.PHONY: all deps build build-asan demo test test-release test-asan bench bench-transfer bench-mount vectors vectors-keys fuzz clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(call cmake_gen,$(BUILD)) -DCMAKE_BUILD_TYPE=Release \
	  -DBUNKER_WERROR=$(WERROR) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN) $(call cmake_gen,$(ASAN)) -DCMAKE_BUILD_TYPE=Debug -DBUNKER_SANITIZE=ON \
	  -DBUNKER_WERROR=$(WERROR) >/dev/null
	@cmake --build $(ASAN) -j $(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)

test-release: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	@cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

test: test-release test-asan

# The Debian package $(BUILD)/bunker_VERSION-REVISION_amd64.deb (CPack; packaging/CMakeLists.txt).
.PHONY: package
package: build
	@cd $(BUILD) && cpack -G DEB

bench: build
	@bash bench/seal_open.sh $(BUILD)

bench-transfer: build
	@bash bench/transfer.sh $(BUILD)

# One 1 GiB capsule against awscli on the Swift S3 server of tests/tools/swift_s3.sh.
bench-s3: build
	@bash bench/s3.sh $(BUILD)

# Root only (/dev/fuse, drop_caches); installs gocryptfs, the peer, when missing.
bench-mount: build
	@bash bench/mount.sh $(BUILD)

bench-report: build
	@bash bench/audit_report.sh $(BUILD)

# Regenerates spec/vectors/ (commit the result; tests check the committed vectors).
vectors: build
	@$(BUILD)/tests/make_vectors spec/vectors

# The CLI's key files (NAME.key, mode 0600, and NAME.pub) for the test-only identities of
# spec/vectors, made from keys/secrets.txt: e.g.
#   capsule open spec/vectors/valid_aes256gcm.capsule --identity $(BUILD)/vector-keys/alice.key
#     --trust spec/vectors/keys/issuer.pub --to /tmp/out
vectors-keys: build
	@$(BUILD)/tests/make_vectors --keys spec/vectors/keys/secrets.txt $(BUILD)/vector-keys

# libFuzzer targets with clang; run e.g. build/fuzz/tests/capsule_reader_fuzz -max_total_time=60
fuzz: deps
	@cmake -S . -B build/fuzz $(call cmake_gen,build/fuzz) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DBUNKER_FUZZ=ON -DBUNKER_TESTS=OFF >/dev/null
	@cmake --build build/fuzz -j $(JOBS) --target capsule_reader_fuzz archive_reader_fuzz policy_fuzz audit_fuzz key_pem_fuzz
	@echo "fuzzers in build/fuzz/tests: capsule_reader_fuzz archive_reader_fuzz policy_fuzz audit_fuzz key_pem_fuzz"
	@echo "e.g. build/fuzz/tests/capsule_reader_fuzz -max_total_time=60 tests/fuzz/corpus/capsule_reader_fuzz spec/vectors"

clean:
	rm -rf build
