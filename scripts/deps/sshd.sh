#!/usr/bin/env bash
# Installs OpenSSH server (sshd), used by the provisioning tests' real test hosts.
# Idempotent: quick when sshd is already there.
set -euo pipefail
if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then
  echo "sshd already installed: $(/usr/sbin/sshd -V 2>&1 | head -n1 || true)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends openssh-server
# The tests start their own sshd processes; the system service is not needed.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now ssh >/dev/null 2>&1 || true
fi
