#!/bin/sh
# Creates what the example config points at, when missing: a self-signed
# certificate for the dev hostname, a users file with dev@localhost /
# devpass, and the spool folder. Everything lives in ./run (git-ignored).
set -eu
cd "$(dirname "$0")/.."
mkdir -p run/tls run/spool
chmod 700 run/spool
if [ ! -s run/tls/cert.pem ] || [ ! -s run/tls/key.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/CN=relay.localhost" -addext "subjectAltName=DNS:relay.localhost,DNS:localhost,IP:127.0.0.1" \
    -keyout run/tls/key.pem -out run/tls/cert.pem 2>/dev/null
  chmod 600 run/tls/key.pem
  echo "dev-setup: self-signed certificate in run/tls/"
fi
if [ ! -s run/users ]; then
  printf 'dev@localhost:%s\n' "$(openssl passwd -6 devpass)" > run/users
  chmod 600 run/users
  echo "dev-setup: users file run/users (dev@localhost / devpass)"
fi
