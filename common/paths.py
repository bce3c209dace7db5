"""Well-known paths, kept in one place so docs/ARCHITECTURE.md stays true.

Lab nodes get a private mount namespace with their own /run, /etc/edgectl and
/var/lib/edgectl, so these absolute paths are safe to use inside a lab.
"""
from pathlib import Path

CONFIG_FILE = Path("/etc/edgectl/config.yaml")
ADMIN_KUBECONFIG = Path("/etc/edgectl/edgectl.yaml")
SERVER_DATA_DIR = Path("/var/lib/edgectl/server")
AGENT_DATA_DIR = Path("/var/lib/edgectl/agent")
RUN_DIR = Path("/run/edgectl")
FLANNEL_RUN_DIR = Path("/run/flannel")
CNI_CONF_DIR = Path("/etc/cni/net.d")
CNI_BIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
POD_LOG_DIR = Path("/var/log/pods")
# Lab state lives in the root namespace's /run so `lab down --all` finds crashed labs.
LAB_STATE_DIR = Path("/run/edgectl-lab")

# Ports (see docs/ARCHITECTURE.md).
SERVER_PORT = 6443
AGENT_LB_PORT = 6444
KUBELET_PORT = 10250
VXLAN_PORT = 8472
WIREGUARD_PORT = 51820
