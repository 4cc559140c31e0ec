#!/bin/sh
# Installs the named Debian packages that are not installed yet, without
# questions. Postfix's debconf is preseeded to "No configuration" so it
# never touches the machine's own mail setup; tests run private instances.
set -eu
missing=""
for p in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# Recommends are not installed: the Makefile names every package needed
# (see the comment on its package lists), so what is installed is what is named.
# If apt cannot install them, say so in one line after apt's own output.
# shellcheck disable=SC2086
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
   ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; then
  echo "setup error: apt-get could not install:$missing — install them by hand, then run make again" >&2
  exit 1
fi
