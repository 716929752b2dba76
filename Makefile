# SCS — Simple Cloud Storage. See README.md.
#
#   make demo        three nodes on this machine and a mount at ~/scs
#   make demo-stop   stop exactly what make demo started
#   make test        everything CI runs
#   make test-faults the namespace fault suite alone (root): SEEDS=N for seeds 1..N, SEED=n to replay one
#   make bench       benchmarks; results in bench-results/
#   make fuzz        every fuzz target for FUZZ_SECONDS (60) each; results in bench-results/fuzz-latest.md
#   make install     binaries, the mount.scs helper and systemd units (PREFIX, DESTDIR honoured)

CARGO     ?= cargo
PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    := $(DESTDIR)$(PREFIX)/bin
SBINDIR   := $(DESTDIR)$(PREFIX)/sbin
# mount(8) looks for its helpers in /sbin only (libmount: /sbin, /sbin/fs.d,
# /sbin/fs), so install links /sbin/mount.scs to $(PREFIX)/sbin/mount.scs,
# as cifs-utils and nfs-utils put theirs in /sbin whatever the prefix.
# ROOTSBINDIR= leaves that link out.
ROOTSBINDIR ?= /sbin
UNITDIR   ?= $(DESTDIR)/etc/systemd/system
USERUNITDIR ?= $(DESTDIR)/etc/systemd/user
DEMO_DIR  ?= $(HOME)/.local/share/scs-demo
MOUNTPOINT ?= $(HOME)/scs
# Every integration test has its own hard timeouts; this bounds the whole run.
TEST_TIMEOUT ?= 2400
# The fault suite: empty = the CI seeds; SEEDS=N runs seeds 1..N (FIRST_SEED=k:
# k onwards) and writes bench-results/faults-latest.md; SEED=n replays one.
SEEDS     ?=
FIRST_SEED ?=
SEED      ?=

# A clean build has nothing to reuse: incremental state only takes disk
# (2.7 of a CI build's 6.8 GB before line tables).
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
endif

.PHONY: all build deps test test-unit test-integration test-faults fuzz demo demo-stop bench install install-files fmt lint clean

all: build

build:
	$(CARGO) build --release --bins

# Debian packages the tests and the mount need, installed when missing.
deps:
	@./scripts/deps.sh

test: deps
	$(CARGO) build --bins
	timeout $(TEST_TIMEOUT) $(CARGO) test --workspace --no-fail-fast -- --test-threads=2

# Each seed takes about a minute (35 s of workload, then heal and checks);
# the bound allows five minutes each.
test-faults: deps
	$(CARGO) build --bins
	SEEDS=$(SEEDS) FIRST_SEED=$(FIRST_SEED) SEED=$(SEED) timeout $$(( $(or $(SEEDS),3) * 300 + 300 )) \
		$(CARGO) test -p scs-tests --test faults -- --nocapture --test-threads=1

test-unit:
	$(CARGO) test --workspace --lib --bins

test-integration: deps
	$(CARGO) build --bins
	timeout $(TEST_TIMEOUT) $(CARGO) test -p scs-tests -- --test-threads=2

demo: deps build
	@DEMO_DIR="$(DEMO_DIR)" MOUNTPOINT="$(MOUNTPOINT)" ./scripts/demo.sh start

demo-stop:
	@DEMO_DIR="$(DEMO_DIR)" MOUNTPOINT="$(MOUNTPOINT)" ./scripts/demo.sh stop

bench: deps build
	./scripts/bench.sh

# Installs cargo-fuzz when missing; FUZZ_TARGETS picks some of the targets.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

install: build install-files

# What `install` copies, without building first (BINSRC: where the binaries are).
BINSRC ?= target/release
SYSCONFDIR ?= /etc
install-files:
	install -d $(BINDIR) $(SBINDIR) $(UNITDIR) $(USERUNITDIR) $(DESTDIR)$(SYSCONFDIR)/scs
	install -m 0755 $(BINSRC)/scs-node $(BINSRC)/scs $(BINSRC)/scs-mount $(BINDIR)/
	ln -sfn ../bin/scs-mount $(SBINDIR)/mount.scs
	@# -ef: with PREFIX=/usr on a merged-/usr system the two are one file already.
	if [ -n "$(ROOTSBINDIR)" ] && ! [ $(DESTDIR)$(ROOTSBINDIR)/mount.scs -ef $(SBINDIR)/mount.scs ]; then \
		install -d $(DESTDIR)$(ROOTSBINDIR) && \
		ln -sfn $(PREFIX)/sbin/mount.scs $(DESTDIR)$(ROOTSBINDIR)/mount.scs; \
	fi
	sed 's|@BINDIR@|$(PREFIX)/bin|g' systemd/scs-node@.service > $(UNITDIR)/scs-node@.service
	sed 's|@BINDIR@|$(PREFIX)/bin|g' systemd/scs-mount-shared.service > $(UNITDIR)/scs-mount-shared.service
	sed 's|@BINDIR@|$(PREFIX)/bin|g' systemd/scs-mount.service > $(USERUNITDIR)/scs-mount.service
	chmod 0644 $(UNITDIR)/scs-node@.service $(UNITDIR)/scs-mount-shared.service $(USERUNITDIR)/scs-mount.service
	install -m 0644 systemd/node.toml.example $(DESTDIR)$(SYSCONFDIR)/scs/node.toml.example

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
