"""A real single-node Kubernetes cluster for the real-deployment tests, and nothing left behind.

Every part is built from the Go module proxy (:mod:`.go_tools`) or comes from Debian: etcd and
kube-apiserver (:mod:`.kube_apiserver`), the controller manager, the scheduler, a kubelet on a
private containerd (its own root, state and socket), kube-proxy in iptables mode, CoreDNS, and
the CNI bridge plugin. The node's address sits on a link of its own (an empty bridge), so pods
reach the API server and the cluster DNS without anything listening on the host's real
interfaces. Images are copied in from a Docker engine (``docker save | ctr import``); pods never
pull.

Run as root. What the node changes on the host is put back when the cluster stops: iptables,
links and ``ip_forward`` (:mod:`.host_network`), the kernel settings the kubelet and kube-proxy
tune, the mounts and network namespaces of pods, the cgroups of the kubelet and the symlinks of
``/var/log/containers``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .docker_engine import DockerEngine, docker_cli
from .go_tools import KUBERNETES_VERSION, ensure_coredns, ensure_kubernetes, module_source
from .host_network import HostNetworkState
from .kafka import cache_root
from .kube_apiserver import SERVICE_RANGE, KubeApiServer
from .packages import MissingDependency, ensure_debian_files, ensure_debian_packages
from .ports import free_port
from .process import ManagedProcess, log_tail, run_checked

__all__ = ["NODE_ADDRESS", "NODE_COMPONENTS", "PAUSE_IMAGE", "KubeCluster", "ensure_pause_image"]

log = logging.getLogger(__name__)

NODE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
NODE_NAME = "streamwise-node"
NODE_LINK = "sw-node0"
NODE_ADDRESS = "10.249.0.1"
POD_CIDR = "10.244.0.0/24"
BRIDGE = "sw-cni0"
DNS_ADDRESS = "10.96.0.10"
PAUSE_IMAGE = "streamwise-local/pause:3.10"
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CNI_DIR = Path("/usr/lib/cni")
CONTAINER_LOGS = Path("/var/log/containers")
NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
CGROUP_ROOT = Path("/sys/fs/cgroup")
KERNEL_SETTINGS = (
    # tuned by the kubelet (protectKernelDefaults: false) and kube-proxy; the bridge one by us
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/bridge/bridge-nf-call-iptables",
    "net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
)


def _sysctl(name: str) -> Path:
    return Path("/proc/sys") / name


@dataclass(frozen=True)
class HostState:
    """What a node changes beyond the network: kernel settings, mounts, cgroups, log symlinks."""

    network: HostNetworkState
    kernel: dict[str, str]
    mounts: frozenset[str]
    netns: frozenset[str]
    cgroups: frozenset[str]
    container_logs: frozenset[str] | None

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            network=HostNetworkState.capture(),
            kernel={name: _sysctl(name).read_text() for name in KERNEL_SETTINGS if _sysctl(name).exists()},
            mounts=frozenset(_mount_points()),
            netns=frozenset(str(p) for d in NETNS_DIRS if d.is_dir() for p in d.iterdir()),
            cgroups=frozenset(str(p) for p in CGROUP_ROOT.glob("*/kubepods*")),
            container_logs=frozenset(os.listdir(CONTAINER_LOGS)) if CONTAINER_LOGS.is_dir() else None,
        )

    def restore(self, owned: Path) -> None:
        """Put it all back; ``owned`` is the folder of the node's own state (removed by the caller)."""
        for point in sorted(set(_mount_points()) - self.mounts, key=len, reverse=True):
            if point.startswith(str(owned)) or any(point.startswith(str(d)) for d in NETNS_DIRS):
                run_checked(["umount", "-l", point], timeout=60, check=False)
        for folder in NETNS_DIRS:
            if folder.is_dir() and not folder.is_symlink():
                for entry in folder.iterdir():
                    if str(entry) not in self.netns:
                        entry.unlink(missing_ok=True)
                if not any(folder.iterdir()) and not any(str(n).startswith(str(folder)) for n in self.netns):
                    folder.rmdir()
        for top in CGROUP_ROOT.glob("*/kubepods*"):
            if str(top) not in self.cgroups:
                _remove_cgroup(top)
        if self.container_logs is None:
            shutil.rmtree(CONTAINER_LOGS, ignore_errors=True)
        elif CONTAINER_LOGS.is_dir():
            for name in set(os.listdir(CONTAINER_LOGS)) - self.container_logs:
                (CONTAINER_LOGS / name).unlink(missing_ok=True)
        for name, value in self.kernel.items():
            try:
                _sysctl(name).write_text(value)
            except OSError as exc:
                log.warning("could not restore %s: %s", name, exc)
        self.network.restore()


def _mount_points() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _remove_cgroup(folder: Path) -> None:
    for child in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            child.rmdir()
        except OSError as exc:
            log.warning("could not remove cgroup %s: %s", child, exc)
    try:
        folder.rmdir()
    except OSError as exc:
        log.warning("could not remove cgroup %s: %s", folder, exc)


def ensure_pause_image(engine: DockerEngine) -> str:
    """The sandbox image: ``pause.c`` of the Kubernetes module, static, in an empty image."""
    if engine.has_image(PAUSE_IMAGE):
        return PAUSE_IMAGE
    gcc = ensure_debian_packages({"gcc": "gcc"})["gcc"]
    pause_c = module_source("k8s.io/kubernetes", KUBERNETES_VERSION) / "build" / "pause" / "linux" / "pause.c"
    with tempfile.TemporaryDirectory(prefix="sw-pause-") as tmp:
        context = Path(tmp)
        run_checked([gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={KUBERNETES_VERSION}", "-o", str(context / "pause"),
                     str(pause_c)], timeout=300)
        (context / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n')
        engine.docker("build", "-t", PAUSE_IMAGE, str(context), timeout=600, env={"DOCKER_BUILDKIT": "0"})
    return PAUSE_IMAGE


def _containerd_config(root: Path, state: Path, socket: Path, cni_conf: Path) -> str:
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM lacks CAP_SYS_RESOURCE: without it every sandbox fails to start.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_DIR}"
    conf_dir = "{cni_conf}"
"""


def _cni_config(ipam_dir: Path) -> str:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "streamwise",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def _kubelet_config(ca: Path, containerd: Path, port: int, healthz: int, pod_logs: Path) -> str:
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_ADDRESS, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}, "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd}",
        "clusterDNS": [DNS_ADDRESS], "clusterDomain": "cluster.local",
        # Pods resolve cluster names only: nothing of the host's resolver leaks in.
        "resolvConf": "",
        "podLogsDir": str(pod_logs),
        # A test node: nothing is evicted for a full disk, no image is collected.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "maxPods": 60,
    }, indent=2)


def _corefile(kubeconfig: Path) -> str:
    # Only cluster names: there is no forwarder, so pods reach nothing outside the cluster by name.
    return f""".:53 {{
    bind {NODE_ADDRESS}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


_DNS_SERVICE = f"""apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
spec:
  clusterIP: {DNS_ADDRESS}
  ports:
    - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}
    - {{name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
addressType: IPv4
endpoints:
  - addresses: ["{NODE_ADDRESS}"]
ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"""


class KubeCluster:
    """``with KubeCluster() as cluster:`` then ``cluster.kubectl(...)``; ``load_images`` first."""

    def __init__(self, *, start_timeout: float = 300.0) -> None:
        self.start_timeout = start_timeout
        self.work = Path(tempfile.mkdtemp(prefix="sw-cluster-", dir=self._parent()))
        self.api = KubeApiServer(self.work / "api", address=NODE_ADDRESS, with_kubelets=True)
        self.containerd_socket = self.work / "run" / "containerd.sock"
        self._processes: list[ManagedProcess] = []
        self._host: HostState | None = None

    @staticmethod
    def _parent() -> Path:
        # overlayfs snapshots need a real filesystem under them: the cache's, not a tmpfs.
        parent = cache_root() / "clusters"
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    def __enter__(self) -> KubeCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start -----------------------------------------------------------------------------------

    def start(self) -> None:
        if os.geteuid() != 0:
            raise MissingDependency("a Kubernetes node needs root (containerd, iptables, mounts)")
        tools = ensure_debian_packages({"containerd": "containerd", "ctr": "containerd", "runc": "runc",
                                        "iptables": "iptables", "ip": "iproute2", "conntrack": "conntrack"})
        ensure_debian_files({str(CNI_DIR / name): "containernetworking-plugins" for name in CNI_PLUGINS})
        binaries = {**ensure_kubernetes(NODE_COMPONENTS), "coredns": ensure_coredns()}
        self._host = HostState.capture()
        self._node_network()
        self.api.start()
        self._start_containerd(tools["containerd"])
        kubeconfig = str(self.api.kubeconfig)
        common = [f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                  f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"]
        self._spawn("kube-controller-manager", [
            str(binaries["kube-controller-manager"]), *common, f"--secure-port={free_port()}",
            f"--service-account-private-key-file={self.api.pki / 'sa.key'}", f"--root-ca-file={self.api.pki / 'ca.crt'}",
            "--use-service-account-credentials=false", "--allocate-node-cidrs=false", "--cluster-name=streamwise-test",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
        ])
        self._spawn("kube-scheduler", [str(binaries["kube-scheduler"]), *common, f"--secure-port={free_port()}"])
        self._start_kubelet(binaries["kubelet"])
        self._spawn("kube-proxy", [
            str(binaries["kube-proxy"]), f"--kubeconfig={kubeconfig}", "--proxy-mode=iptables", f"--hostname-override={NODE_NAME}",
            f"--cluster-cidr={POD_CIDR}", f"--nodeport-addresses={NODE_ADDRESS}/32",
            f"--metrics-bind-address=127.0.0.1:{free_port()}", f"--healthz-bind-address=127.0.0.1:{free_port()}",
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0", "--v=1",
        ])
        corefile = self.work / "Corefile"
        corefile.write_text(_corefile(self.api.kubeconfig))
        self._spawn("coredns", [str(binaries["coredns"]), "-conf", str(corefile)])
        self._wait("the node to be Ready", self._node_ready)
        self.kubectl("apply", "-f", "-", input=_DNS_SERVICE)
        self._wait("the default service account", lambda: self.kubectl(
            "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0)
        log.info("Kubernetes %s node %s ready (%s)", KUBERNETES_VERSION, NODE_NAME, self.work)

    def _node_network(self) -> None:
        run_checked(["ip", "link", "add", NODE_LINK, "type", "bridge"], timeout=30)  # no dummy module in every kernel
        run_checked(["ip", "addr", "add", f"{NODE_ADDRESS}/32", "dev", NODE_LINK], timeout=30)
        run_checked(["ip", "link", "set", NODE_LINK, "up"], timeout=30)
        # The host's own connections to Services take the node's address, never the default route.
        run_checked(["ip", "route", "add", SERVICE_RANGE, "dev", NODE_LINK, "src", NODE_ADDRESS], timeout=30)
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        bridge_nf = _sysctl("net/bridge/bridge-nf-call-iptables")
        if bridge_nf.exists():
            bridge_nf.write_text("1\n")  # Service traffic between pods of one bridge goes through kube-proxy's rules
        for flag in ("-s", "-d"):
            run_checked(["iptables", "-I", "FORWARD", flag, POD_CIDR, "-j", "ACCEPT"], timeout=30)

    def _start_containerd(self, containerd: str) -> None:
        cni_conf = self.work / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-streamwise.conflist").write_text(_cni_config(self.work / "cni" / "ipam"))
        config = self.work / "containerd.toml"
        config.write_text(_containerd_config(self.work / "containerd", self.work / "run" / "containerd-state",
                                             self.containerd_socket, cni_conf))
        self._spawn("containerd", [containerd, "--config", str(config)])
        self._wait("containerd", lambda: self.containerd_socket.exists() and self.ctr("version", check=False).returncode == 0)

    def _start_kubelet(self, kubelet: Path) -> None:
        config = self.work / "kubelet.json"
        config.write_text(_kubelet_config(self.api.pki / "ca.crt", self.containerd_socket, free_port(), free_port(),
                                          self.work / "pod-logs"))
        self._spawn("kubelet", [
            str(kubelet), f"--config={config}", f"--kubeconfig={self.api.kubeconfig}", f"--root-dir={self.work / 'kubelet'}",
            f"--cert-dir={self.work / 'kubelet-pki'}", f"--node-ip={NODE_ADDRESS}", f"--hostname-override={NODE_NAME}", "--v=1",
        ])

    def _spawn(self, name: str, argv: list[str]) -> None:
        process = ManagedProcess(name, argv, self.work / "logs" / f"{name}.log")
        process.start()
        self._processes.append(process)

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            dead = [p.name for p in self._processes if not p.alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"waiting for {what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'}\n{self.logs()}")
            time.sleep(1)

    def _node_ready(self) -> bool:
        result = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        node = json.loads(result.stdout)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        return ready and not any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints", []))

    # --- use -------------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.api.kubectl(*args, input=input, timeout=timeout, check=check)

    def ctr(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_checked(["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
                           timeout=timeout, check=check)

    def load_images(self, engine: DockerEngine, images: list[str]) -> None:
        """Copy ``images`` (and the pause image) from ``engine`` into the node's containerd."""
        images = [ensure_pause_image(engine), *images]
        archive = self.work / "images.tar"
        run_checked([docker_cli(), "save", "-o", str(archive), *images], env=engine.env(), timeout=1200)
        try:
            self.ctr("images", "import", "--no-unpack", str(archive), timeout=1200)
        finally:
            archive.unlink(missing_ok=True)
        log.info("loaded %d images into the node", len(images))

    def make_volumes(self, count: int, size: str = "10Gi") -> None:
        """``count`` pre-made PersistentVolumes (host folders of the node) for claims without a
        storage class: the cluster has no provisioner."""
        documents = []
        for number in range(count):
            folder = self.work / "volumes" / f"pv{number}"
            folder.mkdir(parents=True)
            folder.chmod(0o777)  # the pods' users differ, and a hostPath volume gets no fsGroup
            documents.append(json.dumps({
                "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"streamwise-test-pv{number}"},
                "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                         "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(folder), "type": "Directory"}},
            }))
        self.kubectl("apply", "-f", "-", input="\n---\n".join(documents))

    def service_url(self, namespace: str, name: str, port: str | int) -> str:
        """``http://<cluster IP>:<port>``: kube-proxy routes the host's own connections to it too."""
        service = json.loads(self.kubectl("get", "service", name, "-n", namespace, "-o", "json").stdout)
        number = next(p["port"] for p in service["spec"]["ports"] if port in (p.get("name"), p["port"]))
        return f"http://{service['spec']['clusterIP']}:{number}"

    def logs(self, lines: int = 25) -> str:
        return "\n".join(f"--- {p.name} ---\n{log_tail(p.log_path, lines)}" for p in self._processes)

    # --- stop ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Delete every pod (so the runtime tears down their sandboxes), stop every process, then
        put the host back as it was found and remove the node's state."""
        try:
            if self._processes and any(p.name == "kubelet" and p.alive() for p in self._processes):
                self._delete_pods()
        finally:
            for process in reversed(self._processes):
                process.stop(signal.SIGTERM, grace=10 if process.name == "containerd" else 5)
            self._processes.clear()
            self.api.kill()
            self._kill_shims()
            if self._host is not None:
                self._host.restore(self.work)
                self._host = None
            shutil.rmtree(self.work, ignore_errors=True)

    def _delete_pods(self) -> None:
        """With the controllers stopped first, no pod is replaced: each is stopped within a second,
        and the kubelet tears its sandbox down."""
        for process in self._processes:
            if process.name == "kube-controller-manager":
                process.stop(signal.SIGTERM, grace=5)
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=true", "--timeout=120s",
                     check=False, timeout=180)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.ctr("containers", "list", "-q", check=False).stdout.split():
                return
            time.sleep(1)
        log.warning("containers still present after deleting every pod")

    def _kill_shims(self) -> None:
        """The runtime's shims outlive containerd: those of this node (their command line names
        its socket) are killed."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and str(self.containerd_socket).encode() in cmdline:
                with contextlib.suppress(OSError):
                    os.killpg(int(entry.name), signal.SIGKILL)

