"""A private network for the chaos suite: PostgreSQL in one namespace, each pod in its own, a
router namespace between them where partitions are made.

    [<lab>-a] eth0 .1.2 == ra .1.1 \\
                                     [<lab>-net] router, chain FAULTS  rdb .0.1 == eth0 .0.2 [<lab>-db]
    [<lab>-b] eth0 .2.2 == rb .2.1 /

Faults are iptables rules in the router namespace, so packets vanish "in the network" and
neither end's kernel knows: a DROP in a pod's own OUTPUT chain would make ``connect()`` fail
at once with EPERM, which no real partition does. Nothing is added to the root namespace; the
harness reaches PostgreSQL through its unix socket. ``tc netem`` would give latency, but this
kernel has no ``sch_netem``: slow links are random loss instead (``loss:P``), which TCP turns
into retransmission delays.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pg_scheduler.embedded import system_command

PREFIX = "pgsc"


class LabUnavailable(RuntimeError):
    """Not root, or ``ip`` / ``iptables`` missing: the caller skips or fails with this reason."""


def lab_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        try:
            system_command(tool)
        except Exception:
            hint = " (apt-get install -y iptables)" if tool == "iptables" else ""
            return f"`{tool}` is not installed{hint}"
    return None


@dataclass
class Lab:
    """The namespaces ``<prefix>-db``, ``<prefix>-net`` and one per pod, on ``<net>.0.0/16``."""

    prefix: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    """Per harness process, so that two runs on one machine never touch each other's lab."""
    net: str = "10.231"

    @property
    def db_address(self) -> str:
        return f"{self.net}.0.2"

    @property
    def subnet(self) -> str:
        return f"{self.net}.0.0/16"

    def namespace(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def netns_exec(self, node: str) -> list[str]:
        """The command prefix that runs a program inside ``node``'s namespace."""
        return [system_command("ip"), "netns", "exec", self.namespace(node)]

    # ------------------------------------------------------------------ build and tear down
    def up(self, pods: list[str]) -> None:
        reason = lab_unavailable_reason()
        if reason:
            raise LabUnavailable(reason)
        _delete_orphaned_labs()
        net, db = self.namespace("net"), self.namespace("db")
        self._ip("netns", "add", net)
        self._in("net", "ip", "link", "set", "lo", "up")
        self._in("net", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._in("net", "iptables", "-N", "FAULTS")
        self._in("net", "iptables", "-I", "FORWARD", "-j", "FAULTS")
        self._ip("netns", "add", db)
        self._in("db", "ip", "link", "set", "lo", "up")
        self._ip("-n", net, "link", "add", "rdb", "type", "veth", "peer", "name", "eth0", "netns", db)
        self._ip("-n", net, "addr", "add", f"{self.net}.0.1/24", "dev", "rdb")
        self._ip("-n", net, "link", "set", "rdb", "up")
        self._ip("-n", db, "addr", "add", f"{self.db_address}/24", "dev", "eth0")
        self._ip("-n", db, "link", "set", "eth0", "up")
        self._ip("-n", db, "route", "add", self.subnet, "via", f"{self.net}.0.1")
        for index, pod in enumerate(pods, start=1):
            self._add_pod(pod, index)

    def _add_pod(self, pod: str, index: int) -> None:
        if not (pod.isalnum() and pod.islower() and len(pod) <= 8):
            raise ValueError(f"pod name {pod!r}: use 1-8 lowercase letters or digits")
        net, ns = self.namespace("net"), self.namespace(pod)
        self._ip("netns", "add", ns)
        self._in(pod, "ip", "link", "set", "lo", "up")
        self._ip("-n", net, "link", "add", f"r{pod}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._ip("-n", net, "addr", "add", f"{self.net}.{index}.1/24", "dev", f"r{pod}")
        self._ip("-n", net, "link", "set", f"r{pod}", "up")
        self._ip("-n", ns, "addr", "add", f"{self.net}.{index}.2/24", "dev", "eth0")
        self._ip("-n", ns, "link", "set", "eth0", "up")
        # Only a route to the lab: nothing in a pod reaches beyond it.
        self._ip("-n", ns, "route", "add", self.subnet, "via", f"{self.net}.{index}.1")

    def down(self) -> None:
        for name in _namespaces():
            if name.startswith(f"{self.prefix}-"):
                _delete_namespace(name)

    # ------------------------------------------------------------------ faults
    def partition(self, pod: str, mode: str = "drop") -> None:
        """Cut ``pod`` off from everything (the database included). ``mode``: ``drop`` (silent,
        both ways), ``drop-to-db`` / ``drop-from-db`` (one way), ``reject`` (TCP reset: fast
        failure), ``down`` (the pod's link loses carrier), ``loss:P`` (drops a share P)."""
        self.heal(pod)
        link = f"r{pod}"
        if mode == "down":
            self._ip("-n", self.namespace("net"), "link", "set", link, "down")
            return
        rules: list[list[str]]
        if mode == "drop":
            rules = [["-i", link, "-j", "DROP"], ["-o", link, "-j", "DROP"]]
        elif mode == "drop-to-db":
            rules = [["-i", link, "-j", "DROP"]]
        elif mode == "drop-from-db":
            rules = [["-o", link, "-j", "DROP"]]
        elif mode == "reject":
            rules = [
                [side, link, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]
                for side in ("-i", "-o")
            ]
        elif mode.startswith("loss:"):
            share = float(mode.removeprefix("loss:"))
            if not 0 < share < 1:
                raise ValueError(f"loss share {share} must be between 0 and 1")
            rules = [
                [side, link, "-m", "statistic", "--mode", "random", "--probability", str(share), "-j", "DROP"]
                for side in ("-i", "-o")
            ]
        else:
            raise ValueError(f"unknown partition mode {mode!r}")
        for rule in rules:
            self._in("net", "iptables", "-A", "FAULTS", *rule)

    def heal(self, pod: str) -> None:
        """Remove every fault of ``pod``: its rules and a downed link."""
        link = f"r{pod}"
        listed = self._in("net", "iptables", "-S", "FAULTS")
        for line in listed.splitlines():
            words = line.split()
            if words[:2] == ["-A", "FAULTS"] and link in words:
                self._in("net", "iptables", "-D", *words[1:])
        self._ip("-n", self.namespace("net"), "link", "set", link, "up")

    # ------------------------------------------------------------------ helpers
    def _ip(self, *args: str) -> str:
        return _run([system_command("ip"), *args])

    def _in(self, node: str, tool: str, *args: str) -> str:
        return _run([*self.netns_exec(node), system_command(tool), *args])


def _namespaces() -> list[str]:
    listed = subprocess.run(
        [system_command("ip"), "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _delete_namespace(name: str) -> None:
    subprocess.run([system_command("ip"), "netns", "del", name], check=False, capture_output=True)


def _delete_orphaned_labs() -> None:
    """Namespaces of labs whose harness process is gone (a run killed before its cleanup)."""
    for name in _namespaces():
        match = re.match(rf"{PREFIX}(\d+)-", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _delete_namespace(name)


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
