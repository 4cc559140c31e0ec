#!/bin/sh
# Regenerates the fixed test PKI in Tests/RelayTestSupport/Fixtures:
#   ca.pem            test root CA ("relayd test CA")
#   mx.pem/mx.key     leaf for mx.relayd.test (+ localhost, 127.0.0.1), signed by the CA
#   selfsigned.pem/.key  self-signed leaf for mx.relayd.test
#   rsa.pem/rsa.key   self-signed RSA-2048 leaf for the same names: static-RSA
#                     key exchange needs an RSA certificate, so only with it
#                     can a test show that relayd refuses that key exchange
# Keys are P-256 (rsa.key aside) and certificates valid for 100 years, so the
# fixtures never expire under the tests. Nothing here is secret: these keys exist only for tests.
set -eu
out="${1:-$(dirname "$0")/../Tests/RelayTestSupport/Fixtures}"
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days 36500 -subj "/O=relayd tests/CN=relayd test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem

openssl ecparam -name prime256v1 -genkey -noout -out mx.key
openssl req -new -key mx.key -subj "/CN=mx.relayd.test" -out "$tmp/mx.csr"
printf 'subjectAltName=DNS:mx.relayd.test,DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' > "$tmp/ext"
openssl x509 -req -in "$tmp/mx.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial -sha256 -days 36500 \
  -extfile "$tmp/ext" -out mx.pem
rm -f ca.srl

openssl ecparam -name prime256v1 -genkey -noout -out selfsigned.key
openssl req -x509 -new -key selfsigned.key -sha256 -days 36500 -subj "/CN=mx.relayd.test" \
  -addext "subjectAltName=DNS:mx.relayd.test" -out selfsigned.pem

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 36500 -subj "/CN=mx.relayd.test" \
  -addext "subjectAltName=DNS:mx.relayd.test,DNS:localhost,IP:127.0.0.1" -addext "basicConstraints=CA:FALSE" \
  -addext "extendedKeyUsage=serverAuth,clientAuth" -keyout rsa.key -out rsa.pem
chmod 644 rsa.key
echo "test PKI written to $out"
