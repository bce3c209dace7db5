"""Pure parts of the pod runtime: CRI log framing, CNI invocation and results,
pod files and env, lifecycle rules. No namespaces, no processes."""
from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import pytest

from edgectl.agent.runtime import cni, crilog, envsources, lifecycle, podfiles
from edgectl.agent.runtime.interface import ContainerExit, ContainerHandle
from edgectl.agent.runtime.spec import PodSpecError, parse_pod

NS = 1_795_000_000_123_456_789


# ---- CRI logs ---------------------------------------------------------------


def test_cri_timestamp_has_nine_fraction_digits_in_utc() -> None:
    assert crilog.timestamp(NS) == "2026-11-18T11:06:40.123456789Z"
    assert crilog.timestamp(1_000_000_000) == "1970-01-01T00:00:01.000000000Z"


def test_splitter_full_lines_partial_pieces_and_flush_on_close() -> None:
    sp = crilog.LineSplitter("stdout", max_line=4)
    assert sp.feed(b"ab", NS) == b""
    assert sp.feed(b"c\nabcdefghij", NS) == (
        crilog.encode("stdout", "F", b"abc", NS) + crilog.encode("stdout", "P", b"abcd", NS)
        + crilog.encode("stdout", "P", b"efgh", NS))
    assert sp.feed(b"\n", NS) == crilog.encode("stdout", "F", b"ij", NS)
    assert sp.feed(b"wxyz\n", NS) == crilog.encode("stdout", "F", b"wxyz", NS)  # exactly max_line is full
    assert sp.feed(b"tail", NS) == crilog.encode("stdout", "P", b"tail", NS)
    sp.feed(b"x", NS)
    assert sp.close(NS) == crilog.encode("stdout", "F", b"x", NS)
    assert sp.close(NS) == b""


def test_parse_line_roundtrip_and_errors() -> None:
    rec = crilog.parse_line(crilog.encode("stderr", "P", b"a b  c", NS))
    assert (rec.stream, rec.partial, rec.text, rec.timestamp) == ("stderr", True, b"a b  c", crilog.timestamp(NS))
    assert crilog.parse_line(crilog.encode("stdout", "F", b"", NS)).text == b""
    for bad in (b"garbage", b"2026-01-01T00:00:00Z stdin F x", b"ts stdout X x"):
        with pytest.raises(crilog.LogFormatError):
            crilog.parse_line(bad)
    with pytest.raises(ValueError):
        crilog.LineSplitter("stdin")


# ---- CNI ------------------------------------------------------------------------


def test_default_conflist_shape_and_idempotent_write(tmp_path: Path) -> None:
    doc = cni.default_conflist(pod_cidr="10.42.3.0/24", lease_dir="/x/leases", mtu=1450)
    bridge, portmap = doc["plugins"]
    assert doc["cniVersion"] == "1.0.0" and doc["name"] == "edgectl"
    assert (bridge["type"], bridge["bridge"], bridge["isGateway"], bridge["ipMasq"], bridge["mtu"]) == (
        "bridge", "cni0", True, True, 1450)
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.42.3.0/24"}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/x/leases"}
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    with pytest.raises(ValueError):
        cni.default_conflist(pod_cidr="10.42.3.1/24")
    path = cni.ensure_default_conflist(tmp_path, pod_cidr="10.42.3.0/24")
    mtime = path.stat().st_mtime_ns
    assert cni.ensure_default_conflist(tmp_path, pod_cidr="10.42.3.0/24").stat().st_mtime_ns == mtime
    assert path.name == "10-edgectl.conflist"


def test_load_conflist_takes_the_first_file_and_wraps_single_conf(tmp_path: Path) -> None:
    with pytest.raises(cni.CniError, match="no CNI network config"):
        cni.load_conflist(tmp_path / "missing")
    (tmp_path / "20-b.conflist").write_text(json.dumps(cni.default_conflist(pod_cidr="10.42.0.0/24")))
    (tmp_path / "10-a.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "single", "type": "bridge"}))
    (tmp_path / "00-ignored.txt").write_text("not a config")
    net = cni.load_conflist(tmp_path)
    assert (net.name, net.cni_version, [p["type"] for p in net.plugins]) == ("single", "0.4.0", ["bridge"])
    (tmp_path / "05-bad.conflist").write_text("{nope")
    with pytest.raises(cni.CniError, match="05-bad.conflist: cannot read"):
        cni.load_conflist(tmp_path)
    (tmp_path / "05-bad.conflist").write_text(json.dumps({"name": "x", "plugins": [{"notype": 1}]}))
    with pytest.raises(cni.CniError, match="every plugin needs a type"):
        cni.load_conflist(tmp_path)


def test_plugin_invocation_env_stdin_prev_result_and_capabilities() -> None:
    net = cni.NetworkConfigList.from_dict(cni.default_conflist(pod_cidr="10.42.0.0/24"))
    env, stdin = cni.plugin_invocation(
        command="ADD", net=net, plugin=net.plugins[1], container_id="edgectl-abc", netns="/run/netns/edgectl-abc",
        ifname="eth0", bin_dirs=[Path("/usr/lib/cni"), Path("/opt/cni/bin")], prev_result={"ips": []},
        runtime_config={"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}],
                        "bandwidth": {"x": 1}},
        cni_args={"K8S_POD_NAME": "web"})
    assert {k: v for k, v in env.items() if k.startswith("CNI_")} == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "edgectl-abc", "CNI_NETNS": "/run/netns/edgectl-abc",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni:/opt/cni/bin", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"}
    conf = json.loads(stdin)
    assert conf["name"] == "edgectl" and conf["cniVersion"] == "1.0.0" and conf["prevResult"] == {"ips": []}
    # Only the capabilities the plugin declares reach it.
    assert conf["runtimeConfig"] == {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]}
    _, stdin = cni.plugin_invocation(command="DEL", net=net, plugin=net.plugins[0], container_id="c", netns="",
                                     ifname="eth0", bin_dirs=[], runtime_config={"portMappings": []})
    assert "runtimeConfig" not in json.loads(stdin) and "prevResult" not in json.loads(stdin)


def test_parse_result_picks_ips_inside_the_sandbox() -> None:
    raw = json.dumps({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0", "mac": "aa"}, {"name": "veth1", "mac": "bb"},
                       {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/p"}],
        "ips": [{"address": "10.42.0.7/24", "gateway": "10.42.0.1", "interface": 2},
                {"address": "10.42.0.1/24", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}).encode()
    res = cni.parse_result(raw, plugin="bridge")
    assert res.pod_ips("/run/netns/p") == ("10.42.0.7",)
    assert res.ips[0].gateway == "10.42.0.1"
    with pytest.raises(cni.CniError, match="unreadable result"):
        cni.parse_result(b'{"ips": [{"gateway": "x"}]}', plugin="bridge")


def test_parse_error_uses_the_plugin_error_json() -> None:
    err = cni.parse_error(plugin="host-local", command="ADD", returncode=1,
                          stdout=b'{"cniVersion":"1.0.0","code":11,"msg":"no IP addresses available",'
                                 b'"details":"range 10.42.0.0/30"}', stderr=b"")
    assert str(err) == "CNI ADD failed in plugin host-local: no IP addresses available (range 10.42.0.0/30)"
    assert (err.code, err.plugin, err.reason) == (11, "host-local", "FailedCreatePodSandBox")
    err = cni.parse_error(plugin="x", command="DEL", returncode=2, stdout=b"", stderr=b"boom\n")
    assert str(err) == "CNI DEL failed in plugin x: boom"
    assert str(cni.parse_error(plugin="x", command="ADD", returncode=3, stdout=b"", stderr=b"")) == \
        "CNI ADD failed in plugin x (exit 3)"


def test_host_local_lease_dirs() -> None:
    net = cni.NetworkConfigList.from_dict(cni.default_conflist(pod_cidr="10.42.5.0/24"))
    (d,) = cni.host_local_lease_dirs(net)
    assert d.path == Path("/var/lib/cni/networks/edgectl") and [str(s) for s in d.subnets] == ["10.42.5.0/24"]


# ---- spec and pod files -------------------------------------------------------


def _pod(**spec: object) -> dict:
    return {"metadata": {"uid": "u-1", "name": "web", "namespace": "shop"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh"]}], **spec}}


def test_parse_pod_defaults_and_errors() -> None:
    p = parse_pod(_pod())
    assert (p.restart_policy, p.grace_seconds, p.hostname, p.key) == ("Always", 30, "web", "shop/web")
    doc = _pod(terminationGracePeriodSeconds=5)
    doc["metadata"]["deletionGracePeriodSeconds"] = 1
    doc["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p = parse_pod(doc)
    assert p.grace_seconds == 1 and p.deleting
    with pytest.raises(PodSpecError, match="restartPolicy"):
        parse_pod(_pod(restartPolicy="Sometimes"))
    with pytest.raises(PodSpecError, match="uid"):
        parse_pod({"metadata": {"name": "x"}})
    with pytest.raises(PodSpecError, match="command must be a list"):
        parse_pod(_pod(containers=[{"name": "c", "command": "sh -c x"}]))
    assert parse_pod(_pod(volumes=[{"name": "v", "configMap": {}}])).volumes[0].kind == "configMap"


def test_hosts_and_resolv_conf() -> None:
    p = parse_pod(_pod(hostAliases=[{"ip": "1.2.3.4", "hostnames": ["a", "b"]}], subdomain="sub"))
    hosts = podfiles.hosts_file(p, ["10.42.0.9"])
    assert "10.42.0.9\tweb.sub.shop.svc.cluster.local\tweb\n" in hosts
    assert hosts.startswith("# Kubernetes-managed") and "127.0.0.1\tlocalhost" in hosts
    assert hosts.endswith("# Entries added by HostAliases.\n1.2.3.4\ta b\n")
    cluster = podfiles.ClusterInfo(cluster_dns="10.43.0.10")
    assert podfiles.resolv_conf(p, cluster=cluster, host_resolv="H") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n")
    assert podfiles.resolv_conf(parse_pod(_pod(dnsPolicy="Default")), cluster=cluster, host_resolv="H") == "H"
    assert podfiles.resolv_conf(p, cluster=podfiles.ClusterInfo(), host_resolv="H") == "H"


def test_container_env_precedence_service_links_and_expansion() -> None:
    svc = {"metadata": {"name": "redis-main", "namespace": "shop"},
           "spec": {"clusterIP": "10.43.7.7", "ports": [{"name": "db", "port": 6379, "protocol": "TCP"}]}}
    other_ns = {"metadata": {"name": "other", "namespace": "x"}, "spec": {"clusterIP": "10.43.1.1", "ports": [{"port": 1}]}}
    headless = {"metadata": {"name": "h", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    p = parse_pod(_pod(containers=[{"name": "c", "command": ["echo", "$(A)-$(NOPE)-$$(A)"],
                                    "env": [{"name": "A", "value": "x"}, {"name": "B", "value": "$(A)y"},
                                            {"name": "PATH", "value": "/opt/bin"}]}]))
    env = podfiles.container_env(p, p.containers[0], cluster=podfiles.ClusterInfo(), services=[svc, other_ns, headless])
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_PORT_443_TCP"] == "tcp://10.43.0.1:443" and env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["REDIS_MAIN_SERVICE_HOST"] == "10.43.7.7" and env["REDIS_MAIN_SERVICE_PORT_DB"] == "6379"
    assert env["REDIS_MAIN_PORT_6379_TCP_ADDR"] == "10.43.7.7" and env["REDIS_MAIN_PORT"] == "tcp://10.43.7.7:6379"
    assert "OTHER_SERVICE_HOST" not in env and "H_SERVICE_HOST" not in env
    assert (env["B"], env["PATH"], env["HOSTNAME"]) == ("xy", "/opt/bin", "web")
    assert podfiles.container_argv(p.containers[0], env) == ["echo", "x-$(NOPE)-$(A)"]
    p2 = parse_pod(_pod(enableServiceLinks=False))
    env2 = podfiles.container_env(p2, p2.containers[0], cluster=podfiles.ClusterInfo(), services=[svc])
    assert "REDIS_MAIN_SERVICE_HOST" not in env2 and env2["KUBERNETES_SERVICE_HOST"] == "10.43.0.1"


# ---- env valueFrom: downward API and resources ------------------------------------

def _env_pod(env: list[dict], **container: object) -> object:
    doc = _pod(containers=[{"name": "c", "command": ["sh"], "env": env, **container},
                           {"name": "side", "command": ["sh"], "resources": {"limits": {"memory": "64Mi"}}}],
               nodeName="edge-1", serviceAccountName="robot")
    doc["metadata"].update(labels={"app": "web"}, annotations={"team/owner": "ops"})
    return parse_pod(doc)


def _field(path: str) -> dict:
    return {"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}


FACTS = envsources.PodFacts(pod_ips=("10.42.0.7", "fd00::7"), host_ips=("198.18.0.10",),
                            allocatable={"cpu": "2", "memory": "4016812Ki", "ephemeral-storage": "0"})


@pytest.mark.parametrize("path, value", [
    ("metadata.name", "web"), ("metadata.namespace", "shop"), ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "web"), ("metadata.labels['missing']", ""),
    ("metadata.annotations['team/owner']", "ops"), ("spec.nodeName", "edge-1"),
    ("spec.serviceAccountName", "robot"), ("status.podIP", "10.42.0.7"), ("status.podIPs", "10.42.0.7,fd00::7"),
    ("status.hostIP", "198.18.0.10"), ("status.hostIPs", "198.18.0.10"),
])
def test_field_ref_values(path: str, value: str) -> None:
    p = _env_pod([_field(path), {"name": "W", "value": "<$(V)>"}])
    env = podfiles.container_env(p, p.containers[0], cluster=podfiles.ClusterInfo(), facts=FACTS)
    assert env["V"] == value and env["W"] == f"<{value}>"  # later values expand earlier valueFrom ones


@pytest.mark.parametrize("path", ["metadata.labels", "status.phase", "spec.containers[0].name", ""])
def test_unknown_field_path_is_a_config_error_naming_it(path: str) -> None:
    p = _env_pod([_field(path)])
    with pytest.raises(envsources.EnvError) as info:
        podfiles.container_env(p, p.containers[0], cluster=podfiles.ClusterInfo(), facts=FACTS)
    assert f"env V: fieldRef.fieldPath {path!r} is not supported" in str(info.value)
    assert "status.podIP" in str(info.value)  # the message lists what works


@pytest.mark.parametrize("text, value", [
    ("500m", Fraction(1, 2)), ("2", 2), ("1.5Gi", 3 * 2**29), ("128Mi", 128 * 2**20), ("1e3", 1000),
    ("100k", 100_000), ("250u", Fraction(1, 4000)), (".5", Fraction(1, 2)),
])
def test_parse_quantity(text: str, value: object) -> None:
    assert envsources.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1Gb", "1.2.3", "Mi"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(envsources.EnvError, match="not a resource quantity"):
        envsources.parse_quantity(text)


def _res(resource: str, divisor: str = "", container: str = "") -> dict:
    ref = {"resource": resource, **({"divisor": divisor} if divisor else {}),
           **({"containerName": container} if container else {})}
    return {"name": "R", "valueFrom": {"resourceFieldRef": ref}}


@pytest.mark.parametrize("ref, resources, value", [
    (_res("limits.cpu"), {"limits": {"cpu": "500m"}}, "1"),  # ceil(0.5 core)
    (_res("limits.cpu", "1m"), {"limits": {"cpu": "500m"}}, "500"),
    (_res("limits.cpu", "1m"), {}, "2000"),  # no limit: node allocatable
    (_res("limits.memory"), {}, str(4016812 * 1024)),
    (_res("limits.memory", "1Mi"), {"limits": {"memory": "100M"}}, "96"),  # ceil(95.37)
    (_res("requests.memory", "1Mi"), {"limits": {"memory": "64Mi"}}, "64"),  # request defaults to limit
    (_res("requests.cpu", "1m"), {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}, "250"),
    (_res("requests.cpu"), {}, "0"),
    (_res("limits.memory", "1Mi", "side"), {}, "64"),  # another container's limit
])
def test_resource_field_ref(ref: dict, resources: dict, value: str) -> None:
    p = _env_pod([ref], resources=resources)
    env = podfiles.container_env(p, p.containers[0], cluster=podfiles.ClusterInfo(), facts=FACTS)
    assert env["R"] == value


@pytest.mark.parametrize("ref, facts, fragment", [
    (_res("limits.gpu"), FACTS, "resourceFieldRef.resource 'limits.gpu' is not supported"),
    (_res("limits.cpu", container="nope"), FACTS, "containerName 'nope': no such container"),
    (_res("limits.cpu", "0"), FACTS, "divisor '0' must be positive"),
    (_res("limits.cpu", "x"), FACTS, "'x' is not a resource quantity"),
    (_res("limits.cpu"), envsources.PodFacts(), "node's allocatable cpu is unknown"),
])
def test_resource_field_ref_errors(ref: dict, facts: envsources.PodFacts, fragment: str) -> None:
    p = _env_pod([ref])
    with pytest.raises(envsources.EnvError, match=re.escape(fragment)):
        podfiles.container_env(p, p.containers[0], cluster=podfiles.ClusterInfo(), facts=facts)


def test_malformed_value_from_is_refused_at_parse_time() -> None:
    p = _env_pod([{"name": "X", "valueFrom": {}}, {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "a"}}}])
    assert p.containers[0].unsupported == (
        "env X: valueFrom must set exactly one of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef",
        "env Y: valueFrom.configMapKeyRef needs name and key")


# ---- env from ConfigMaps and Secrets ------------------------------------------------------

CMS = {"cfg": {"LEVEL": "debug", "MODE": "fast", "bad key": "skipped", "1ST": "skipped-without-prefix"},
       "other": {"url": "http://x"}}


SECRETS = {"db": {"pw": "s3cret", "user": "svc", "bad key": "skipped"}}


def _cm_env(container: dict, configmaps: dict | None = CMS, secrets: dict | None = SECRETS) -> dict[str, str]:
    doc = _pod(containers=[{"name": "c", "command": ["sh"], **container}])
    p = parse_pod(doc)
    return podfiles.container_env(p, p.containers[0], cluster=podfiles.ClusterInfo(),
                                  facts=envsources.PodFacts(configmaps=configmaps, secrets=secrets))


def test_env_from_secrets_mirrors_configmaps() -> None:
    env = _cm_env({
        "envFrom": [{"prefix": "DB_", "secretRef": {"name": "db"}}, {"secretRef": {"name": "gone", "optional": True}}],
        "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "db", "key": "pw", "optional": True}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope", "optional": True}}}],
    })
    assert (env["PW"], env["DB_pw"], env["DB_user"]) == ("s3cret", "s3cret", "svc")
    assert "CFG" not in env and "OPT" not in env and "DB_bad key" not in env  # kinds do not mix


def test_env_from_configmaps_with_prefix_order_and_optional() -> None:
    env = _cm_env({
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "X_", "configMapRef": {"name": "cfg"}},
                    {"configMapRef": {"name": "gone", "optional": True}}],
        "env": [{"name": "MODE", "value": "slow-$(LEVEL)"},  # env wins over envFrom, and sees it
                {"name": "URL", "valueFrom": {"configMapKeyRef": {"name": "other", "key": "url"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "other", "key": "nope", "optional": True}}},
                {"name": "OPT2", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": True}}}],
    })
    assert (env["LEVEL"], env["MODE"], env["X_LEVEL"], env["X_1ST"], env["URL"]) == (
        "debug", "slow-debug", "debug", "skipped-without-prefix", "http://x")
    assert "bad key" not in env and "1ST" not in env  # not variable names; with the prefix 1ST is one
    assert "OPT" not in env and "OPT2" not in env and "X_bad key" not in env


def test_env_from_skips_keys_that_are_not_variable_names() -> None:
    env = _cm_env({"envFrom": [{"configMapRef": {"name": "cfg"}}]})
    assert "bad key" not in env and "1ST" not in env and env["LEVEL"] == "debug"


@pytest.mark.parametrize("container, message", [
    ({"envFrom": [{"configMapRef": {"name": "gone"}}]}, 'configmap "gone" not found'),
    ({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]},
     'env A: configmap "gone" not found'),
    ({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]},
     "env A: couldn't find key k in ConfigMap shop/cfg"),
    ({"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "pw"}}}]},
     'env PW: secret "gone" not found'),
    ({"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}]},
     "env PW: couldn't find key nope in Secret shop/db"),
    ({"envFrom": [{"secretRef": {"name": "cfg"}}]}, 'secret "cfg" not found'),
])
def test_missing_configmaps_and_secrets_are_config_errors(container: dict, message: str) -> None:
    with pytest.raises(envsources.EnvError) as info:
        _cm_env(container)
    assert message in str(info.value)


def test_configmap_names_lists_each_referenced_configmap_once() -> None:
    p = parse_pod(_pod(containers=[{"name": "c", "command": ["sh"],
                                    "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "s"}}],
                                    "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "b", "key": "k"}}},
                                            {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "a", "key": "k"}}}]}]))
    assert envsources.configmap_names(p.containers[0]) == ["a", "b"]
    assert envsources.secret_names(p.containers[0]) == ["s"]


def test_static_configmaps_is_a_real_source() -> None:
    import asyncio
    src = envsources.StaticConfigMaps({("shop", "cfg"): {"k": "v"}})
    assert asyncio.run(src.get("shop", "cfg")) == {"k": "v"}
    assert asyncio.run(src.get("other", "cfg")) is None


def test_config_errors_retry_at_a_steady_pace_without_raising_the_backoff() -> None:
    rec = lifecycle.ContainerRecord(name="c")
    for _ in range(3):
        lifecycle.record_refused(rec, reason="CreateContainerConfigError", message="m", now=100.0,
                                 backoff=lifecycle.Backoff(), retry_after=10.0)
    assert (rec.not_before, rec.backoff_level, rec.waiting_reason) == (110.0, 0, "CreateContainerConfigError")


def test_host_network_pods_use_the_node_hosts_file_and_dns_fallback() -> None:
    p = parse_pod(_pod(hostNetwork=True, hostAliases=[{"ip": "1.2.3.4", "hostnames": ["a"]}]))
    assert p.host_network
    assert podfiles.host_network_hosts_file(p, "127.0.0.1 localhost\n10.0.0.1 edge") == (
        "127.0.0.1 localhost\n10.0.0.1 edge\n\n# Entries added by HostAliases.\n1.2.3.4\ta\n")
    cluster = podfiles.ClusterInfo(cluster_dns="10.43.0.10")
    assert podfiles.resolv_conf(p, cluster=cluster, host_resolv="H") == "H"  # ClusterFirst falls back
    with_net = parse_pod(_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"))
    assert "nameserver 10.43.0.10" in podfiles.resolv_conf(with_net, cluster=cluster, host_resolv="H")
    env = podfiles.container_env(p, p.containers[0], cluster=podfiles.ClusterInfo(),
                                 facts=envsources.PodFacts(hostname="edge-node"))
    assert env["HOSTNAME"] == "edge-node"


# ---- lifecycle ------------------------------------------------------------------


def _handle(name: str, n: int, started: float) -> ContainerHandle:
    return ContainerHandle(id=f"id{n}", name=name, restart_count=n, pid=100 + n, started_at=started,
                           log_path=f"/l/{n}.log")


def _exit(code: int, at: float) -> ContainerExit:
    return ContainerExit(exit_code=code, finished_at=at, reason="Completed" if code == 0 else "Error")


def test_backoff_doubles_to_the_cap_and_resets_after_long_runs() -> None:
    b = lifecycle.Backoff(base=10, cap=300)
    assert [b.delay(n) for n in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    rec = lifecycle.ContainerRecord(name="c")
    lifecycle.record_start(rec, _handle("c", 0, 0.0))
    lifecycle.record_exit(rec, _exit(1, 1.0), backoff=b)
    assert rec.not_before == 1.0  # first restart is immediate
    lifecycle.record_start(rec, _handle("c", 1, 1.0))
    lifecycle.record_exit(rec, _exit(1, 2.0), backoff=b)
    assert rec.not_before == 12.0 and rec.restart_count == 1
    lifecycle.record_start(rec, _handle("c", 2, 12.0))
    lifecycle.record_exit(rec, _exit(1, 13.0), backoff=b)
    assert rec.not_before == 33.0
    lifecycle.record_start(rec, _handle("c", 3, 33.0))
    lifecycle.record_exit(rec, _exit(1, 33.0 + 700), backoff=b)  # ran > reset_after
    assert rec.not_before == 733.0
    assert rec.last_handle.id == "id2" and rec.last_exit.finished_at == 13.0


@pytest.mark.parametrize("policy,code,init,restart", [
    ("Always", 0, False, True), ("Always", 1, False, True), ("OnFailure", 0, False, False),
    ("OnFailure", 3, False, True), ("Never", 3, False, False), ("Always", 0, True, False),
    ("Always", 1, True, True), ("OnFailure", 1, True, True), ("Never", 1, True, False),
])
def test_should_restart(policy: str, code: int, init: bool, restart: bool) -> None:
    assert lifecycle.should_restart(policy, code, init=init) is restart


def _records(p) -> dict[str, lifecycle.ContainerRecord]:  # noqa: ANN001
    return {c.name: lifecycle.ContainerRecord(name=c.name) for c in p.init_containers + p.containers}


def test_plan_runs_init_containers_one_by_one_then_all_apps() -> None:
    p = parse_pod(_pod(initContainers=[{"name": "i1", "command": ["a"]}, {"name": "i2", "command": ["b"]}],
                       containers=[{"name": "a", "command": ["x"]}, {"name": "b", "command": ["y"]}]))
    recs = _records(p)
    b = lifecycle.Backoff(base=1)
    assert lifecycle.plan(p, recs, now=0).start == ("i1",)
    lifecycle.record_start(recs["i1"], _handle("i1", 0, 0))
    assert lifecycle.plan(p, recs, now=0).start == ()
    assert lifecycle.pod_phase(p, recs, sandbox_ready=True) == "Pending"
    lifecycle.record_exit(recs["i1"], _exit(0, 1), backoff=b)
    assert lifecycle.plan(p, recs, now=1).start == ("i2",)
    lifecycle.record_start(recs["i2"], _handle("i2", 0, 1))
    lifecycle.record_exit(recs["i2"], _exit(2, 2), backoff=b)
    assert lifecycle.plan(p, recs, now=2).start == ("i2",)  # first retry at once
    lifecycle.record_start(recs["i2"], _handle("i2", 1, 2))
    lifecycle.record_exit(recs["i2"], _exit(2, 3), backoff=b)
    step = lifecycle.plan(p, recs, now=3)
    assert step.start == () and step.wake_at == 4
    lifecycle.record_start(recs["i2"], _handle("i2", 2, 4))
    lifecycle.record_exit(recs["i2"], _exit(0, 5), backoff=b)
    assert lifecycle.plan(p, recs, now=5).start == ("a", "b")


def test_phase_follows_kubelet_rules() -> None:
    b = lifecycle.Backoff(base=1)
    for policy, codes, want in [
        ("Never", (0, 0), "Succeeded"), ("Never", (0, 1), "Failed"), ("OnFailure", (0, 0), "Succeeded"),
        ("OnFailure", (0, 1), "Running"), ("Always", (0, 0), "Running"),
    ]:
        p = parse_pod(_pod(restartPolicy=policy, containers=[{"name": "a", "command": ["x"]},
                                                             {"name": "b", "command": ["y"]}]))
        recs = _records(p)
        for name, code in zip("ab", codes):
            lifecycle.record_start(recs[name], _handle(name, 0, 0))
            lifecycle.record_exit(recs[name], _exit(code, 1), backoff=b)
        assert lifecycle.pod_phase(p, recs, sandbox_ready=True) == want, (policy, codes)
    p = parse_pod(_pod(restartPolicy="Never", initContainers=[{"name": "i", "command": ["x"]}]))
    recs = _records(p)
    lifecycle.record_start(recs["i"], _handle("i", 0, 0))
    lifecycle.record_exit(recs["i"], _exit(1, 1), backoff=b)
    assert lifecycle.pod_phase(p, recs, sandbox_ready=True) == "Failed"
    assert lifecycle.plan(p, recs, now=5).init_failed


def test_pod_status_shape() -> None:
    p = parse_pod(_pod(containers=[{"name": "a", "image": "img:1", "command": ["x"]},
                                   {"name": "b", "image": "nginx", "command": ["x"]}]))
    recs = _records(p)
    b = lifecycle.Backoff(base=10)
    lifecycle.record_start(recs["a"], _handle("a", 0, 1_800_000_000))
    lifecycle.record_exit(recs["a"], _exit(1, 1_800_000_001), backoff=b)
    lifecycle.record_start(recs["a"], _handle("a", 1, 1_800_000_001))
    lifecycle.record_exit(recs["a"], _exit(1, 1_800_000_002), backoff=b)
    lifecycle.record_refused(recs["b"], reason="CommandRequired", message="m", now=0, backoff=b)
    st = lifecycle.pod_status(p, recs, runtime="process", ips=["10.42.0.5"], sandbox_ready=True,
                              start_time=1_800_000_000, host_ip="198.18.0.2")
    assert st["phase"] == "Pending" and st["podIP"] == "10.42.0.5" and st["podIPs"] == [{"ip": "10.42.0.5"}]
    a, bst = st["containerStatuses"]
    assert a["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert a["state"]["waiting"]["message"] == "back-off 10s restarting failed container=a pod=web_shop(u-1)"
    assert a["lastState"]["terminated"] == {"exitCode": 1, "reason": "Error", "startedAt": "2027-01-15T08:00:01Z",
                                            "finishedAt": "2027-01-15T08:00:02Z", "containerID": "process://id1"}
    assert (a["restartCount"], a["containerID"], a["image"], a["ready"], a["started"]) == (
        1, "process://id1", "img:1", False, False)
    assert bst["state"] == {"waiting": {"reason": "CommandRequired", "message": "m"}} and "containerID" not in bst
    conds = {c["type"]: (c["status"], c.get("reason")) for c in st["conditions"]}
    assert conds == {"Initialized": ("True", None), "Ready": ("False", "ContainersNotReady"),
                     "ContainersReady": ("False", "ContainersNotReady"), "PodScheduled": ("True", None)}
    since = lifecycle.condition_times({}, st["conditions"], now=5.0)
    assert since["Ready"] == ("False", 5.0)
    assert lifecycle.condition_times(since, st["conditions"], now=9.0) == since


def test_records_roundtrip_through_json() -> None:
    rec = lifecycle.ContainerRecord(name="c")
    lifecycle.record_start(rec, _handle("c", 0, 1.0))
    lifecycle.record_exit(rec, _exit(3, 2.0), backoff=lifecycle.Backoff())
    again = lifecycle.ContainerRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec


def test_shim_log_file_rotates_like_kubelet(tmp_path: Path) -> None:
    from edgectl.agent.runtime.shim import _LogFile

    path = tmp_path / "0.log"
    log = _LogFile(str(path), max_bytes=100, max_files=3)
    for i in range(12):
        log.write(crilog.encode("stdout", "F", b"%02d" % i + b"x" * 40, NS))  # 77 bytes a record
    os.close(log.fd)
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "0.log")
    assert len(rotated) == 2 and all(n.startswith("0.log.") for n in rotated)  # max_files - 1 kept
    # Nothing is lost from the files kept, and every record is whole.
    texts = [crilog.parse_line(line).text[:2] for name in rotated + ["0.log"]
             for line in (tmp_path / name).read_bytes().splitlines()]
    # Two 77-byte records pass 100 bytes, so each rotated file holds two, and
    # the 12th record's rotation left the current file empty.
    assert texts == [b"08", b"09", b"10", b"11"] and path.read_bytes() == b""
    unbounded = _LogFile(str(tmp_path / "1.log"), max_bytes=0, max_files=5)
    unbounded.write(b"y" * 1000)
    os.close(unbounded.fd)
    assert not list(tmp_path.glob("1.log.*"))
