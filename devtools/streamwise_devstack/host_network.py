"""What a container engine or a Kubernetes node changes in the host's network, put back afterwards.

``dockerd`` and kube-proxy add iptables chains and rules, set the ``FORWARD`` policy, turn on
``ip_forward`` and create bridges. A test that starts them captures the state first and
restores it when it stops them, so the host is left as it was found.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .process import run_checked

log = logging.getLogger(__name__)

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
TABLES = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
          "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"), "raw": ("PREROUTING", "OUTPUT")}


def _run(argv: list[str], stdin: str | None = None) -> str:
    return run_checked(argv, input=stdin, timeout=60).stdout


def _nft_tables() -> frozenset[str] | None:
    """``"<family> <name>"`` of every nftables table, or None without the nft tool."""
    if shutil.which("nft") is None:
        return None
    return frozenset(line.removeprefix("table ").strip() for line in _run(["nft", "list", "tables"]).splitlines() if line.startswith("table "))


def _links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in _run(["ip", "-o", "link", "show"]).splitlines()}


@dataclass(frozen=True)
class HostNetworkState:
    """iptables (IPv4 and IPv6), ``ip_forward`` and the network links, as they were."""

    iptables: str
    ip6tables: str | None
    ip_forward: str
    links: frozenset[str]
    nft_tables: frozenset[str] | None

    @classmethod
    def capture(cls) -> HostNetworkState:
        return cls(
            iptables=_run(["iptables-save"]),
            ip6tables=_run(["ip6tables-save"]) if shutil.which("ip6tables-save") else None,
            ip_forward=IP_FORWARD.read_text().strip(),
            links=frozenset(_links()),
            nft_tables=_nft_tables(),
        )

    def restore(self) -> None:
        """Put every captured part back; links that appeared since (bridges, veths) are deleted."""
        _restore("iptables", self.iptables)
        if self.ip6tables is not None:
            _restore("ip6tables", self.ip6tables)
        if self.nft_tables is not None:
            # iptables-nft leaves the tables it created behind, empty: they were not there before.
            for table in sorted((_nft_tables() or frozenset()) - self.nft_tables):
                _run(["nft", "delete", "table", *table.split()])
        IP_FORWARD.write_text(self.ip_forward + "\n")
        for link in sorted(_links() - self.links):
            result = run_checked(["ip", "link", "delete", link], timeout=30, check=False)
            if result.returncode != 0:
                log.warning("could not delete link %s: %s", link, result.stderr.strip())


def _restore(tool: str, saved: str) -> None:
    """``<tool>-restore`` rewrites the tables the dump names; the others were empty (or absent)
    then, so they are emptied: rules and chains deleted, built-in policies back to ACCEPT."""
    if saved.strip():
        _run([f"{tool}-restore"], saved)
    present = {line[1:].strip() for line in saved.splitlines() if line.startswith("*")}
    for table, chains in TABLES.items():
        if table in present:
            continue
        listed = run_checked([tool, "-t", table, "-S"], timeout=60, check=False)
        if listed.returncode != 0 or not listed.stdout.strip():
            continue  # the table does not exist here
        _run([tool, "-t", table, "-F"])
        _run([tool, "-t", table, "-X"])
        for chain in chains:
            _run([tool, "-t", table, "-P", chain, "ACCEPT"])
