"""The test cluster's configuration files (the cluster itself runs in tests/deploy/real): each
parses, and carries the settings this kind of machine needs (devtools/streamwise_devstack/kube_cluster.py)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from streamwise_devstack.kube_cluster import (
    DNS_ADDRESS,
    NODE_ADDRESS,
    PAUSE_IMAGE,
    POD_CIDR,
    _cni_config,
    _containerd_config,
    _corefile,
    _kubelet_config,
)


def test_containerd_keeps_everything_under_its_own_folders_and_never_raises_oom_scores(tmp_path: Path) -> None:
    config = tomllib.loads(_containerd_config(tmp_path / "root", tmp_path / "state", tmp_path / "c.sock", tmp_path / "cni"))
    assert (config["root"], config["state"], config["grpc"]["address"]) == (str(tmp_path / "root"), str(tmp_path / "state"), str(tmp_path / "c.sock"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] and cri["disable_apparmor"] and cri["sandbox_image"] == PAUSE_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False and runc["Root"].startswith(str(tmp_path / "state"))
    assert cri["cni"]["conf_dir"] == str(tmp_path / "cni")
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(str(tmp_path / "root"))


def test_the_kubelet_uses_cgroupfs_resolves_cluster_names_only_and_writes_logs_in_its_folder(tmp_path: Path) -> None:
    config = json.loads(_kubelet_config(tmp_path / "ca.crt", tmp_path / "c.sock", 1, 2, tmp_path / "logs"))
    assert config["cgroupDriver"] == "cgroupfs" and config["failCgroupV1"] is False
    assert config["clusterDNS"] == [DNS_ADDRESS] and config["resolvConf"] == ""
    assert config["address"] == NODE_ADDRESS and config["healthzBindAddress"] == "127.0.0.1" and config["readOnlyPort"] == 0
    assert config["podLogsDir"] == str(tmp_path / "logs")
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_pods_get_addresses_of_the_pod_range_and_dns_answers_cluster_names_only(tmp_path: Path) -> None:
    cni = json.loads(_cni_config(tmp_path / "ipam"))
    [bridge] = [p for p in cni["plugins"] if p["type"] == "bridge"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": POD_CIDR}]] and bridge["hairpinMode"]
    corefile = _corefile(tmp_path / "kubeconfig")
    assert f"bind {NODE_ADDRESS}" in corefile and "forward" not in corefile
