#!/bin/sh
# Checks, before anything is built or tested, that this machine can do
# what the next step will ask of it:
#   run   what building and running relayd needs (`make run`, `make deps`)
#   test  that, plus every real peer the tests drive (`make test`, `make e2e`)
# Each missing capability is one line, "setup error: WHAT — install PACKAGE",
# so a machine set up with --no-install-recommends (where swaks has no TLS)
# stops here with the package to install, not with failed tests later.
# Every problem is listed, then the exit status is 1.
# Each check asks the tool to do the thing the tests need, not only to exist.
set -u
mode="${1:-}"
case "$mode" in
  run) how="make deps" ;;
  test) how="make test-deps" ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac
failed=0
fail() { echo "setup error: $1 — install $2 ($how)" >&2; failed=1; }
has() { command -v "$1" >/dev/null 2>&1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- building and running ---------------------------------------------------

if ! "${SWIFT:-swift}" --version >/dev/null 2>&1; then
  echo "setup error: ${SWIFT:-swift} does not run — install Swift 6 and put it on PATH (README)" >&2
  failed=1
fi
# The C shims include OpenSSL 3 and c-ares >= 1.18 headers (c-ares' API for
# building queries ourselves) crypt.h and zlib.h; a -dev package's .pc file comes
# with its headers and link library, so pkg-config answers for all four.
if ! has pkg-config; then
  fail "pkg-config is missing (it finds the -dev packages below)" pkg-config
else
  pkg-config --atleast-version=3.0 openssl || fail "no OpenSSL 3 headers and libraries" libssl-dev
  pkg-config --atleast-version=1.18 libcares || fail "no c-ares >= 1.18 headers and library" libc-ares-dev
  pkg-config --exists libxcrypt || fail "no crypt.h (libxcrypt)" libcrypt-dev
  # TLS-RPT reports are sent gzipped (RFC 8460 §5.3): CZlib links zlib.
  pkg-config --exists zlib || fail "no zlib.h (zlib)" zlib1g-dev
  # Shared state on PostgreSQL: CLibPQ includes <postgresql/libpq-fe.h>
  # and links libpq; its asynchronous API (PQconnectStartParams) is 9.0+.
  if ! pkg-config --exists libpq || [ ! -r /usr/include/postgresql/libpq-fe.h ] ||
     ! grep -q PQconnectStartParams /usr/include/postgresql/libpq-fe.h; then
    fail "no libpq headers and library (libpq-fe.h in /usr/include/postgresql)" libpq-dev
  fi
fi
# Users files hold yescrypt hashes: a known answer from the system's crypt(3)
# (perl's crypt() calls it; perl-base is always there).
yes_hash='$y$j9T$abcdefghijklmnop$NVVju58SJWYgoLfsW5NXx8P.r6ZOiCKxvsLUcR1lan5'
[ "$(perl -e 'print crypt("devpass", q($y$j9T$abcdefghijklmnop$))' 2>/dev/null)" = "$yes_hash" ] ||
  fail "crypt(3) (libcrypt1) cannot do yescrypt" libcrypt-dev
# dev-setup and the tests make certificates (req -addext) and SHA-512-crypt
# hashes (passwd -6) with the openssl CLI.
sha_hash='$6$abcdefgh$nz/HiErWuw242dPW8JYPXYSySrvGuuL9NF5Rwpoe8crffiO65B9xnZchPMO0oIjIwx5mOqwzXiasb4WHvw6rY/'
if ! has openssl; then
  fail "the openssl command is missing" openssl
elif ! openssl version | grep -q '^OpenSSL 3' ||
     [ "$(echo devpass | openssl passwd -6 -salt abcdefgh -stdin 2>/dev/null)" != "$sha_hash" ]; then
  fail "the openssl command is not OpenSSL 3 or cannot hash with passwd -6" openssl
fi

# --- the test peers -----------------------------------------------------------

if [ "$mode" = test ]; then
  # swaks' --tls (STARTTLS) and --tlsc (TLS on connect) need Net::SSLeay,
  # which Debian ships only as a Recommends of swaks. (AUTH LOGIN/PLAIN need
  # nothing beyond perl, so there is no separate check for them.)
  if ! has swaks; then
    fail "swaks is missing" swaks
  elif ! swaks --support 2>&1 | grep -q '^=== TLS supported'; then
    fail "swaks cannot do STARTTLS or TLS on connect (no Net::SSLeay)" libnet-ssleay-perl
  fi

  # testssl.sh runs the openssl CLI with s_client -starttls smtp.
  if ! has testssl; then
    fail "testssl is missing" testssl.sh
  elif ! testssl --version 2>&1 | grep -q 'Using "OpenSSL'; then
    fail "testssl does not run or finds no OpenSSL" testssl.sh
  fi
  if has openssl && ! openssl s_client -help 2>&1 | grep -q -- '-starttls smtp'; then
    fail "openssl s_client cannot do -starttls smtp (testssl.sh needs it)" openssl
  fi

  # The bed's nginx serves MTA-STS policies over HTTPS.
  if ! has nginx; then
    fail "nginx is missing" nginx
  elif ! nginx -V 2>&1 | grep -q -- '--with-http_ssl_module'; then
    fail "nginx is built without http_ssl_module" nginx
  fi

  # The bed signs its DNSSEC zone (dane.test) at start with ldnsutils:
  # ECDSA P-256 keys, an NSEC-signed zone, the KSK's SHA-256 DS.
  ds=""
  if ! has ldns-keygen || ! has ldns-signzone || ! has ldns-key2ds; then
    fail "ldns-keygen, ldns-signzone or ldns-key2ds is missing" ldnsutils
  else
    mkdir "$tmp/dnssec"
    cat > "$tmp/dnssec/zone" <<EOF
probe.test. 300 IN SOA ns.probe.test. h.probe.test. 1 3600 600 86400 300
probe.test. 300 IN NS ns.probe.test.
ns.probe.test. 300 IN A 127.0.0.155
_25._tcp.ns.probe.test. 300 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
EOF
    ksk=$(cd "$tmp/dnssec" && ldns-keygen -a ECDSAP256SHA256 -k probe.test 2>/dev/null)
    zsk=$(cd "$tmp/dnssec" && ldns-keygen -a ECDSAP256SHA256 probe.test 2>/dev/null)
    if [ -z "$ksk" ] || [ -z "$zsk" ] ||
       ! (cd "$tmp/dnssec" && ldns-signzone -f signed zone "$zsk" "$ksk") >/dev/null 2>&1 ||
       ! grep -q 'RRSIG[[:space:]]*TLSA 13 ' "$tmp/dnssec/signed" ||
       ! ds=$(cd "$tmp/dnssec" && ldns-key2ds -n -2 "$ksk.key" 2>/dev/null) || [ -z "$ds" ]; then
      fail "ldnsutils cannot make ECDSAP256SHA256 keys, sign a zone with TLSA records or make a DS" ldnsutils
      ds=""
    fi
  fi

  # The bed's unbound: the config is checked with unbound-checkconf, then
  # served with these directives: local zones and forward zones, the
  # validator with a trust anchor for the signed zone and a stub-zone to its
  # authoritative server, itself an unbound serving the signed zone file
  # (auth-zone). No root hints or root trust anchor are needed.
  if ! has unbound || ! has unbound-checkconf; then
    fail "unbound or unbound-checkconf is missing" unbound
  else
    cat > "$tmp/unbound.conf" <<EOF
server:
  interface: 127.0.0.153
  username: ""
  chroot: ""
  directory: "$tmp"
  module-config: "validator iterator"
  trust-anchor: "${ds:-probe.test. 3600 IN DS 1 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}"
  trust-anchor-signaling: no
  root-key-sentinel: no
  val-permissive-mode: no
  log-queries: yes
  do-not-query-localhost: no
  local-zone: "test." static
  local-zone: "probe.test." transparent
  local-data: "plain.test. 300 IN MX 10 mx.probe.test."
stub-zone:
  name: "probe.test."
  stub-addr: 127.0.0.155@53
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@9
EOF
    unbound-checkconf "$tmp/unbound.conf" >/dev/null 2>&1 || fail "unbound-checkconf rejects the test bed's kind of config" unbound
    if [ -n "$ds" ]; then
      cat > "$tmp/unbound-auth.conf" <<EOF
server:
  interface: 127.0.0.155
  username: ""
  chroot: ""
  directory: "$tmp"
  module-config: "iterator"
  local-zone: "test." nodefault
auth-zone:
  name: "probe.test."
  zonefile: "$tmp/dnssec/signed"
  for-downstream: yes
  for-upstream: no
  fallback-enabled: no
EOF
      unbound-checkconf "$tmp/unbound-auth.conf" >/dev/null 2>&1 ||
        fail "unbound-checkconf rejects the bed's authoritative config (auth-zone, signed zone file)" unbound
    fi
  fi

  # Private Postfix instances (`postfix -c DIR`): compatibility_level 3.6,
  # Debian's master.cf.dist, the postfix user and postdrop group its
  # postinst creates, and an smtpd built with TLS.
  if ! has postfix || ! has postconf; then
    fail "postfix or postconf is missing" postfix
  else
    version=$(postconf -d -h mail_version 2>/dev/null)
    smtpd="$(postconf -d -h daemon_directory 2>/dev/null)/smtpd"
    if [ -z "$version" ]; then
      fail "postconf -d does not run" postfix
    elif [ "$(printf '3.6\n%s\n' "$version" | sort -V | head -n1)" != 3.6 ]; then
      fail "postfix $version is older than 3.6" postfix
    elif ! ldd "$smtpd" 2>/dev/null | grep -q 'libssl\.so'; then
      fail "postfix's smtpd is built without TLS" postfix
    elif [ ! -r /usr/share/postfix/master.cf.dist ] || ! getent passwd postfix >/dev/null ||
         ! getent group postdrop >/dev/null; then
      fail "postfix's master.cf.dist, postfix user or postdrop group is missing (half-installed package?)" postfix
    fi
  fi

  # The tests run under /usr/bin/python3 (tomllib needs 3.11; the receivers
  # and the assertions need TLS 1.3 in its ssl module).
  if ! /usr/bin/python3 -c 'import sys, ssl; sys.exit(not (sys.version_info >= (3, 11) and ssl.HAS_TLSv1_3))' 2>/dev/null; then
    fail "/usr/bin/python3 is missing, older than 3.11, or has no TLS 1.3" python3
  else
    /usr/bin/python3 -c 'import pytest' 2>/dev/null || fail "python3 cannot import pytest" python3-pytest
    /usr/bin/python3 -c 'import dns.message, dns.query, dns.rcode' 2>/dev/null ||
      fail "python3 cannot import dns (dnspython)" python3-dnspython
  fi

  # The RelayPostgres tests run a private server: initdb and pg_ctl from
  # /usr/lib/postgresql/*/bin, which must make a cluster in a temp dir.
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ] || [ ! -x "$pgbin/pg_ctl" ] || [ ! -x "$pgbin/postgres" ]; then
    fail "the PostgreSQL server (initdb, pg_ctl, postgres) is missing" postgresql
  elif ! "$pgbin/postgres" --version 2>/dev/null | grep -q 'PostgreSQL'; then
    fail "the PostgreSQL server does not run" postgresql
  fi

  # tests/e2e/test_contrib.py: promtool checks the dashboard's queries and
  # the alert rules and runs their unit tests; prometheus (the server, same
  # package) scrapes a stub exposition and answers the query API.
  if ! has promtool || ! has prometheus; then
    fail "promtool or prometheus is missing" prometheus
  else
    printf 'groups:\n- name: probe\n  rules:\n  - alert: Probe\n    expr: sum(rate(relayd_probe_total[5m])) > 0\n    for: 1m\n' > "$tmp/rules.yml"
    if ! promtool --version >/dev/null 2>&1 || ! prometheus --version >/dev/null 2>&1 ||
       ! promtool check rules "$tmp/rules.yml" >/dev/null 2>&1; then
      fail "promtool or prometheus does not run, or promtool cannot check alert rules" prometheus
    fi
  fi

  # tests/e2e/test_bench_smoke.py runs bench/run.py, which builds the
  # compiled load generator (bench/loadgen.c) with gcc against OpenSSL.
  if ! has gcc; then
    fail "gcc is missing (it builds bench/loadgen.c, the benchmark's load generator)" gcc
  elif ! printf '#include <openssl/ssl.h>\nint main(void) { return SSL_CTX_new(TLS_client_method()) == 0; }\n' |
       gcc -x c -o "$tmp/loadgen-probe" - -lssl -lcrypto >/dev/null 2>&1; then
    fail "gcc cannot build a program against OpenSSL (bench/loadgen.c)" gcc
  fi

  # tests/e2e/test_service_unit.py: with no systemd as PID 1, the unit is
  # checked by systemd-analyze (verify, security --offline=true, and the
  # syscall-filter groups), and a real run is traced with strace -f.
  printf '[Service]\nExecStart=/bin/true\nDynamicUser=yes\n' > "$tmp/probe.service"
  if ! has systemd-analyze; then
    fail "systemd-analyze is missing" systemd
  elif ! systemd-analyze verify --man=false "$tmp/probe.service" >/dev/null 2>&1 ||
       ! systemd-analyze security --offline=true --no-pager "$tmp/probe.service" 2>/dev/null |
         grep -q 'Overall exposure level' ||
       ! systemd-analyze syscall-filter --no-pager 2>/dev/null | grep -q '^@system-service'; then
    fail "systemd-analyze cannot verify a unit, rate it offline or list syscall-filter groups" systemd
  fi
  if ! has strace; then
    fail "strace is missing" strace
  elif ! strace -f -qq -o /dev/null /bin/true 2>/dev/null; then
    # Installed but not allowed to ptrace: no package fixes that.
    echo "setup error: strace cannot trace a child here (ptrace refused, e.g. by a container's seccomp profile)" >&2
    failed=1
  fi
fi

exit "$failed"
