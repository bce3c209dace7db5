#!/usr/bin/env bash
# `make demo`: bring up an example lab, show its status and who can reach whom,
# and print how to do each step yourself. Re-runnable: an earlier demo lab of
# the same name is removed first.
set -euo pipefail
cd "$(dirname "$0")/.."
TOPO=${1:-lab/examples/nat-edge.yaml}
EDGECTL=.venv/bin/edgectl
PY=.venv/bin/python

if [ -t 1 ]; then B=$'\e[1m' D=$'\e[2m' C=$'\e[36m' G=$'\e[32m' R=$'\e[0m'; else B= D= C= G= R=; fi
step() { printf '\n%s%s==> %s%s\n' "$B" "$C" "$*" "$R"; }
run() { printf '%s$ edgectl %s%s\n' "$D" "${*:2}" "$R"; "$@"; }

# Validate the file and pick the nodes the walkthrough uses: one node behind a
# NAT (it has a gateway) and one on the outside (preferably a server).
read -r NAME INSIDE OUTSIDE < <("$PY" - "$TOPO" <<'PYEOF'
import sys
from edgectl.errors import EdgectlError
from edgectl.lab.topology import load
try:
    t = load(sys.argv[1])
except EdgectlError as exc:
    print(f"error: {exc}", file=sys.stderr); sys.exit(2)
hosts = [n for n in t.nodes if n.kind != "router"]
inside = next((n for n in hosts if n.gateway), hosts[0])
outside = next((n for n in hosts if n.kind == "server" and not n.gateway), None) \
    or next((n for n in hosts if not n.gateway and n is not inside), hosts[-1])
print(t.name, inside.name, outside.name)
PYEOF
)

printf '%sedgectl demo%s: a network-namespace lab from %s\n' "$B" "$R" "$TOPO"
printf '%sEvery node is a network + mount namespace on this machine; routers do real NAT (iptables),\n' "$D"
printf 'segments are Linux bridges in a per-lab switch namespace. Nothing is added to the host network.%s\n' "$R"

if [ -e "/run/edgectl-lab/$NAME.json" ] || ip netns list | grep -q "^$NAME-switch\b"; then
  step "Removing the previous '$NAME' lab"
  run "$EDGECTL" lab down "$NAME"
fi

step "1. Bring up the lab"
run "$EDGECTL" lab up "$TOPO"

step "2. Status: nodes, addresses, gateways, NAT and published ports"
run "$EDGECTL" lab status "$NAME"

step "3. Reachability matrix: can the row open a new TCP connection to the column?"
run "$EDGECTL" lab matrix "$NAME"

step "4. Inside a node: $INSIDE sits behind a NAT router"
run "$EDGECTL" lab exec "$NAME/$INSIDE" -- ip -brief address
run "$EDGECTL" lab exec "$NAME/$INSIDE" -- ip route

step "5. One path each way"
run "$EDGECTL" lab probe "$NAME/$INSIDE" "$OUTSIDE:6443" --listen || true
run "$EDGECTL" lab probe "$NAME/$OUTSIDE" "$INSIDE:6443" --listen --timeout 0.5 || true

hint() { printf '  %-52s %s# %s%s\n' "$1" "$D" "$2" "$R"; }
printf '\n%s%sThe lab %s is up.%s Try it yourself (%s. .venv/bin/activate%s puts edgectl on your PATH):\n' "$B" "$G" "$NAME" "$R" "$D" "$R"
hint "edgectl lab status" "the table above; -o json for scripts"
hint "edgectl lab exec $INSIDE -- bash" "a shell inside a node; exit code and tty pass through"
hint "edgectl lab exec $INSIDE -- ping -c1 $OUTSIDE" "nodes resolve each other by name"
hint "edgectl lab probe $INSIDE $OUTSIDE:6443 --listen" "exit 0 reachable, 1 blocked, 3 refused"
hint "edgectl lab matrix --udp" "the matrix for UDP"
hint "edgectl lab up lab/examples/double-nat.yaml" "more in lab/examples/; schema in docs/lab.md"
printf '%sTear down:%s\n' "$B" "$R"
hint "make demo-down" "= edgectl lab down --all"
hint "edgectl lab down $NAME" "just this lab"
