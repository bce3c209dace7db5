#!/usr/bin/env bash
# Install what edgectl needs on Debian 12: apt packages (only the missing ones)
# and a .venv with edgectl in editable mode. Idempotent; fast when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  iproute2 iptables ipset procps psmisc util-linux
  wireguard-go wireguard-tools
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  containernetworking-plugins
  mosquitto mosquitto-clients etcd-server
  iperf3 socat tcpdump iputils-ping
  openssh-server openssh-client haproxy
  python3 python3-venv python3-dev gcc make
)

if [ "$(id -u)" != "0" ]; then
  echo "edgectl: run as root (labs need network namespaces): sudo make ..." >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start daemons on the host; labs start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.edgectl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "== installing edgectl into .venv (pip install -e .[test])"
  # Build-backend chatter goes to a log; it is shown only if the install fails.
  log=.venv/pip-install.log
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[test]'; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "edgectl: pip install failed (log above, also in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
