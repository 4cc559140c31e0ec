# relayd — build, run and test. `make run` and `make test` do all set-up on
# a fresh Debian machine with Swift (they install missing packages).
SWIFT    ?= swift
CONFIG   ?= config/relayd.conf.example
PREFIX   ?= /usr/local
SYSCONF  ?= /etc/relayd
# Packages are installed with --no-install-recommends, so a machine gets
# what is named here and nothing else, and a fresh machine and CI agree.
# A capability that Debian ships only as a Recommends must therefore be
# named too (swaks' TLS: libnet-ssleay-perl). scripts/check-setup.sh checks
# each capability and names the package to install; every package here is
# named by one of its checks.
# What building and running needs.
RUN_PKGS  = libssl-dev libc-ares-dev libcrypt-dev zlib1g-dev libpq-dev pkg-config openssl
# What the tests add: real peers and clients. Recommends left out on
# purpose: swaks' libio-socket-inet6-perl and libnet-dns-perl (the tests
# give swaks an IPv4 --server), unbound's dns-root-data (the bed's unbound
# serves local zones and forwards the rest), postfix's ca-certificates (the
# bed has its own CA), python3-dnspython's HTTP/DoH stack, python3-pytest's
# pygments, systemd's dbus and timesyncd (only `systemd-analyze` offline is
# used), testssl.sh's GOST engine, prometheus' prometheus-node-exporter
# (the tests scrape relayd and a stub, not the machine). No test calls ip,
# ps or mkpasswd.
# ldnsutils signs the bed's DNSSEC zone (ldns-keygen, -signzone, -key2ds).
# prometheus brings promtool (checks contrib/'s dashboard queries and alert
# rules) and the server the metrics tests scrape with.
# postgresql (the server: initdb, pg_ctl, postgres) is started by the
# RelayPostgres tests in a temp dir, loopback only; its Recommends
# (postgresql-contrib, sysstat) are not used.
# gcc builds the benchmark's load generator (bench/loadgen.c; the bench
# smoke test in tests/e2e runs it).
TEST_PKGS = postfix swaks libnet-ssleay-perl unbound ldnsutils nginx python3 python3-pytest python3-dnspython testssl.sh systemd strace prometheus gcc postgresql

.PHONY: all deps test-deps bench-deps build release debug dev-setup run test unit e2e check-example install clean fuzz bench tsan

all: build

## Installs what is missing, then checks that it works (scripts/check-setup.sh):
## a missing capability stops here with one "setup error:" line per problem.
deps:
	@scripts/ensure-packages.sh $(RUN_PKGS)
	@SWIFT='$(SWIFT)' scripts/check-setup.sh run

test-deps:
	@scripts/ensure-packages.sh $(RUN_PKGS) $(TEST_PKGS)
	@SWIFT='$(SWIFT)' scripts/check-setup.sh test

# Only the executable: a whole-package release build would also compile
# RelayTestSupport, whose @testable imports need a debug (testing) build.
build release: deps
	$(SWIFT) build -c release --product relayd

debug: deps
	$(SWIFT) build

dev-setup: deps
	@scripts/dev-setup.sh

## Builds, creates the dev certificate and users, and starts relayd on the
## example config (127.0.0.1:2525 smtp, :2587 submission, :2465 smtps).
run: build dev-setup
	.build/release/relayd run --config $(CONFIG)

# Every target may import only what Package.swift names for it: an import
# the layer graph does not allow fails the build (ARCHITECTURE.md).
IMPORT_CHECK = --explicit-target-dependency-import-check error

## Unit tests, the example-config check, then the end-to-end tests.
test: test-deps dev-setup
	$(SWIFT) build --build-tests $(IMPORT_CHECK)
	$(SWIFT) test --skip-build
	$(MAKE) --no-print-directory check-example e2e

unit: deps
	$(SWIFT) build --build-tests $(IMPORT_CHECK)
	$(SWIFT) test --skip-build

## The unit tests and a short end-to-end load (tests/tsan/load.py: a few
## hundred messages by submission, through the queue, out over TLS) under
## ThreadSanitizer, in its own build folder. Any report fails the run.
TSAN_BUILD = --sanitize=thread --build-path .build-tsan
tsan: test-deps dev-setup
	$(SWIFT) build --build-tests $(TSAN_BUILD)
	TSAN_OPTIONS="halt_on_error=1 $(TSAN_OPTIONS)" $(SWIFT) test --skip-build $(TSAN_BUILD)
	$(SWIFT) build --product relayd $(TSAN_BUILD)
	/usr/bin/python3 tests/tsan/load.py .build-tsan/debug/relayd

check-example: dev-setup
	$(SWIFT) build --product relayd
	.build/debug/relayd check-config --config $(CONFIG)

e2e: test-deps dev-setup
	$(SWIFT) build --product relayd
	/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/setup tests/bed tests/e2e

## Fuzzes the SMTP server session, the DNS/SMTP-reply/client parsers and the MTA-STS parsers, each for FUZZ_SECONDS (default 60).
FUZZ_SECONDS ?= 60
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

## relayd against a private Postfix on this machine, same run, interleaved
## rounds; prints the ratio table (bench/run.py --help for the knobs).
## BENCH_ARGS='--suite bigmsg' runs the big-message memory bench instead
## (20 concurrent 30 MiB messages over TLS; not in the default set).
BENCH_ARGS ?=
bench-deps:
	@scripts/ensure-packages.sh $(RUN_PKGS) postfix python3 openssl gcc
	@SWIFT='$(SWIFT)' scripts/check-setup.sh run
bench: bench-deps
	$(SWIFT) build -c release --product relayd
	$(MAKE) -C bench OUT=$(CURDIR)/.build-bench
	/usr/bin/python3 bench/run.py $(BENCH_ARGS)

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSCONF) $(DESTDIR)/etc/systemd/system
	install -m 0755 .build/release/relayd $(DESTDIR)$(PREFIX)/bin/relayd
	[ -e $(DESTDIR)$(SYSCONF)/relayd.conf ] || install -m 0640 config/relayd.conf.example $(DESTDIR)$(SYSCONF)/relayd.conf
	install -m 0644 config/relayd.service $(DESTDIR)/etc/systemd/system/relayd.service
	install -d $(DESTDIR)$(PREFIX)/share/relayd/migrations
	install -m 0644 migrations/*.sql $(DESTDIR)$(PREFIX)/share/relayd/migrations/
	@echo "edit $(SYSCONF)/relayd.conf (paths marked 'Production'), then: systemctl daemon-reload && systemctl enable --now relayd"

clean:
	rm -rf .build .build-fuzz .build-bench bench/last-run.json
