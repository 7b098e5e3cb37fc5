# ktlsshim build. `make` builds build/libktlsshim.so and build/ktls-probe.
# make unit      unit tests (tests/unit), TAP output
# make test      host suite, then the VM suite (kTLS kernel)
# make asan      the library built with ASan+UBSan, host suite against it
# make install   honours PREFIX and DESTDIR (library, probe, launcher, man pages)
# make deb       a Debian package from a staged install (build/deb/)

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
VERSION ?= 0.1.0

CFLAGS_BASE := -std=gnu11 -Wall -Wextra -Wshadow -Wformat=2 -O2 -g -fPIC \
               -fvisibility=hidden -D_GNU_SOURCE $(EXTRA_CFLAGS)
CFLAGS  ?=
ALL_CFLAGS := $(CFLAGS_BASE) $(CFLAGS)
LDLIBS_SHIM := -ldl -pthread

# shim/: the base (core/, stats/), the two towers (shard/, tls/) and the
# kernel's uAPI (kernel/); includes are named from shim/ ("core/log.h").
SHIM_SRC := $(sort $(shell find shim -name '*.c'))
SHIM_HDR := $(sort $(shell find shim -name '*.h'))
SHIM_OBJ := $(patsubst shim/%.c,$(BUILD)/shim/%.o,$(SHIM_SRC))
# probe/ shares the kernel's crypto_info builder with the library.
PROBE_SRC := $(wildcard probe/*.c) shim/kernel/cryptoinfo.c shim/stats/prom.c
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))

all: $(BUILD)/libktlsshim.so $(BUILD)/ktls-probe $(BUILD)/ktlsshim $(BUILD)/tests/tiny_server \
     $(BUILD)/tests/cgi_forker $(BUILD)/tests/bio_copy_server $(BUILD)/tests/sslbio_server

$(BUILD)/shim/%.o: shim/%.c $(SHIM_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ishim -c -o $@ $<

$(BUILD)/libktlsshim.so: $(SHIM_OBJ) shim/libktlsshim.map
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(SHIM_OBJ) \
	    -Wl,--version-script=shim/libktlsshim.map -Wl,-z,now -Wl,-z,relro $(LDLIBS_SHIM) $(EXTRA_LDFLAGS)

$(BUILD)/ktls-probe: $(PROBE_SRC) $(wildcard probe/*.h) shim/kernel/cryptoinfo.h shim/kernel/uapi.h shim/stats/prom.h shim/stats/live_abi.h | $(BUILD)
	$(CC) $(subst -fvisibility=hidden,,$(ALL_CFLAGS)) -Ishim -o $@ $(PROBE_SRC) -ldl $(EXTRA_LDFLAGS)

# The launcher (ktlsshim(1)); it finds the library in ../lib from its own
# directory once installed, or next to itself in the build tree.
LAUNCHER_SRC := $(wildcard launcher/*.c)
$(BUILD)/ktlsshim: $(LAUNCHER_SRC) $(wildcard launcher/*.h) shim/core/parse.h | $(BUILD)
	$(CC) $(subst -fvisibility=hidden,,$(ALL_CFLAGS)) -DKS_VERSION='"$(VERSION)"' \
	    -o $@ $(LAUNCHER_SRC) $(EXTRA_LDFLAGS)

$(BUILD)/tests/%: tests/servers/%.c | $(BUILD)/tests
	$(CC) $(subst -fvisibility=hidden,,$(ALL_CFLAGS)) -o $@ $< -pthread $(EXTRA_LDFLAGS)

# The test servers that link OpenSSL.
$(BUILD)/tests/bio_copy_server $(BUILD)/tests/sslbio_server: $(BUILD)/tests/%: tests/servers/%.c tests/servers/upload.h | $(BUILD)/tests
	$(CC) $(subst -fvisibility=hidden,,$(ALL_CFLAGS)) -o $@ $< -lssl -lcrypto $(EXTRA_LDFLAGS)

# Unit tests (tests/unit/harness.h): each test_*.c is one program that
# includes the shim sources it tests; it links OpenSSL itself, as the
# programs the library runs in do.
$(BUILD)/unit/%: tests/unit/%.c tests/unit/harness.h $(SHIM_SRC) $(SHIM_HDR) | $(BUILD)/unit
	$(CC) $(subst -fvisibility=hidden,,$(ALL_CFLAGS)) -Ishim -o $@ $< -ldl -pthread -lssl -lcrypto $(EXTRA_LDFLAGS)

unit-build: $(UNIT_BIN)

# Runs every unit program; TAP on stdout, non-zero if any case failed.
unit: unit-build
	@rc=0; for t in $(UNIT_BIN); do $$t || rc=1; done; exit $$rc

$(BUILD) $(BUILD)/shim $(BUILD)/tests $(BUILD)/unit:
	mkdir -p $@

MANDIR ?= $(PREFIX)/share/man

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7
	install -m 0644 $(BUILD)/libktlsshim.so $(DESTDIR)$(PREFIX)/lib/libktlsshim.so
	install -m 0755 $(BUILD)/ktls-probe $(DESTDIR)$(PREFIX)/bin/ktls-probe
	install -m 0755 $(BUILD)/ktlsshim $(DESTDIR)$(PREFIX)/bin/ktlsshim
	install -m 0644 man/ktlsshim.1 man/ktls-probe.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/ktlsshim.7 $(DESTDIR)$(MANDIR)/man7/

# Every man page renders without a warning.
man-check:
	@for m in man/*.[17]; do \
	    out=$$(LC_ALL=C.UTF-8 groff -man -ww -z -t $$m 2>&1); \
	    if [ -n "$$out" ]; then echo "$$m: $$out"; exit 1; fi; done

# Debian package: scripts/make-deb stages `make install PREFIX=/usr` and runs
# dpkg-deb (no network, no debhelper).
deb: all
	scripts/make-deb --build $(BUILD) --version $(VERSION)

# Test entry points. KTLSSHIM_LIB tells the suites which build to preload.
test: test-host test-vm

test-host: all
	KTLSSHIM_BUILD=$(abspath $(BUILD)) bats --timing tests/host

test-vm: all
	scripts/vm-run -- env KTLSSHIM_BUILD=$(abspath $(BUILD)) bats --timing tests/vm

asan-build:
	$(MAKE) BUILD=build-asan EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    EXTRA_LDFLAGS="-fsanitize=address,undefined" all

asan: asan-build
	KTLSSHIM_BUILD=$(abspath build-asan) KTLSSHIM_TEST_ASAN=1 bats --timing tests/host

clean:
	rm -rf build build-asan

.PHONY: all install test test-host test-vm asan asan-build clean unit unit-build man-check deb
