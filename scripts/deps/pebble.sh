#!/usr/bin/env bash
# Installs Pebble (Let's Encrypt's ACME test server, Debian package) and makes the test
# certificates it needs (the package ships none): a CA and a 127.0.0.1/localhost
# certificate under /var/tmp/dayshift-pebble. The ingress ACME test starts its own
# pebble and pebble-challtestsrv processes from these files (ports chosen per test).
# Idempotent.
set -euo pipefail
DIR="${DAYSHIFT_PEBBLE_DIR:-/var/tmp/dayshift-pebble}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v pebble >/dev/null 2>&1 || ! command -v pebble-challtestsrv >/dev/null 2>&1; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends pebble openssl
fi
mkdir -p "$DIR"
if [ ! -f "$DIR/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dayshift test CA" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$DIR/key.pem" -out "$DIR/cert.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$DIR/san.ext"
  openssl x509 -req -in "$DIR/cert.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 3650 -extfile "$DIR/san.ext" -out "$DIR/cert.pem" 2>/dev/null
  chmod 644 "$DIR"/*.pem
fi
echo "pebble: $(command -v pebble); test certificates in $DIR"
