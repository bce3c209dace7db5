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
inside = next((n for n in hosts if n.gateway and n.kind == "agent"), None) \
    or next((n for n in hosts if n.gateway), hosts[0])
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

step "6. The cluster: every server and agent node runs edgectl and is Ready"
KUBECONFIG_FILE=$("$EDGECTL" lab kubeconfig "$NAME")
KUBECTL=$(command -v kubectl || echo /usr/lib/google-cloud-sdk/bin/kubectl)
q() { local out="" a; for a in "$@"; do if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi; done; printf '%s' "${out% }"; }
kc() { printf '%s$ kubectl %s%s\n' "$D" "$(q "$@")" "$R"; "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
printf '%skubeconfig: %s (the server'"'"'s 6443 is published on 127.0.0.1)%s\n' "$D" "$KUBECONFIG_FILE" "$R"
kc get nodes -o wide

step "7. A pod on $INSIDE, which sits behind NAT (no inbound connections reach it)"
kc delete pod demo --ignore-not-found --grace-period=0 >/dev/null 2>&1 || true
cat <<YAML | kc apply -f -
apiVersion: v1
kind: Pod
metadata: {name: demo}
spec:
  nodeSelector: {kubernetes.io/hostname: $INSIDE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: debian:12          # kept as given; the process runtime runs the command on the host filesystem
    command: [sh, -c, 'while true; do echo "hello from \$(hostname) at \$(date +%T)"; sleep 1; done']
YAML
kc wait --for=condition=Ready pod/demo --timeout=30s
kc get pod demo -o wide

step "8. kubectl logs and exec reach the pod through the agent's tunnel"
sleep 1
kc logs demo --tail=3
kc exec demo -- sh -c 'echo "inside: hostname=$(hostname) ip=$(hostname -i 2>/dev/null || true)"; cat /etc/hostname'
set +e; kc exec demo -- sh -c 'exit 3'; printf '%s(exit code passed through: %s)%s\n' "$D" "$?" "$R"; set -e

step "9. The tunnels as the server sees them"
run "$EDGECTL" tunnel status --kubeconfig "$KUBECONFIG_FILE"
run "$EDGECTL" lab probe "$NAME/$OUTSIDE" "$INSIDE:10250" --timeout 0.5 || true
printf '%s(the server cannot open a connection to the node: the tunnel is the only path)%s\n' "$D" "$R"

hint() { printf '  %-60s %s# %s%s\n' "$1" "$D" "$2" "$R"; }
printf '\n%s%sThe lab %s is up.%s Try it yourself (%s. .venv/bin/activate%s puts edgectl on your PATH):\n' "$B" "$G" "$NAME" "$R" "$D" "$R"
hint "export KUBECONFIG=\$(edgectl lab kubeconfig $NAME)" "kubectl from the host via 127.0.0.1"
hint "kubectl get nodes -o wide" "every node Ready, agents behind NAT included"
hint "kubectl logs -f demo" "follow; Ctrl-C to stop"
hint "kubectl exec -it demo -- sh" "a tty inside the pod (its own hostname, PID and net namespaces)"
hint "kubectl port-forward pod/NAME LOCAL:PODPORT" "for a pod that listens; same path through the tunnel"
hint "edgectl tunnel status --kubeconfig \$KUBECONFIG" "sessions, RTT, bytes, open streams"
hint "edgectl lab status" "nodes, addresses, NAT, published ports"
hint "edgectl lab exec $INSIDE -- bash" "a shell inside a node; exit code and tty pass through"
hint "edgectl lab probe $INSIDE $OUTSIDE:6443 --listen" "exit 0 reachable, 1 blocked, 3 refused"
hint "edgectl lab matrix" "who can open a connection to whom"
hint "less /run/edgectl-lab/$NAME/nodes/$INSIDE/edgectl.log" "the agent's log"
printf '%sTear down:%s\n' "$B" "$R"
hint "make demo-down" "= edgectl lab down --all"
hint "edgectl lab down $NAME" "just this lab"
