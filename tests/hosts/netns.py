"""Test hosts of their own: Linux network namespaces joined by veth pairs to one bridge.

Every name and address is the test's own. A network is `198.18.N.0/24` (the
benchmarking range, never the machine's networks), with N picked so that no interface
of the root namespace is on it. Its bridge lives in a namespace of its own,
`gv-<id>-net`; each host is a namespace `gv-<id>-<name>` with its own `lo` and one veth,
`eth0`, whose peer is a port of the bridge (`p-<name>`): cutting a host's link sets
that port down, as pulling its cable out of the switch would.

The test process reaches into the network through one more veth, `gv<id>`, whose end
in the root namespace carries `198.18.N.1/24`: the only address the root namespace
gets, on an interface the network made, and which goes when the network does. Nothing
else of the root namespace is touched; `close()` kills every process left in the
network's namespaces and deletes them, whatever the test did.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

IP = shutil.which("ip") or "/usr/sbin/ip"
NETWORKS = ipaddress.ip_network("198.18.0.0/15")


def namespaces_unavailable() -> str | None:
    """None when this process can make network namespaces, else why not."""
    if not Path(IP).exists():
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "making network namespaces needs root (run the hosts suite with sudo)"
    probe = f"gv-{secrets.token_hex(3)}-probe"
    made = subprocess.run(
        [IP, "netns", "add", probe], capture_output=True, text=True, timeout=10, check=False
    )
    if made.returncode != 0:
        return f"`ip netns add` refused: {made.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True, timeout=10, check=False)
    return None


def ip(*args: str, namespace: str | None = None) -> None:
    """Run `ip [-n namespace] args...`; raise with its message if it fails."""
    command = [IP, *(("-n", namespace) if namespace else ()), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


def _root_addresses() -> list[ipaddress.IPv4Interface]:
    listing = subprocess.run(
        [IP, "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return [ipaddress.IPv4Interface(line.split()[3]) for line in listing.splitlines()]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that no interface of the root namespace is on."""
    taken = [a.network for a in _root_addresses()]
    candidates = list(NETWORKS.subnets(new_prefix=24))[1:-1]
    for _ in range(50):
        subnet = candidates[secrets.randbelow(len(candidates))]
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise RuntimeError("no free /24 left in 198.18.0.0/15")


class Host:
    """One test host: a network namespace with one address, and the processes started in it."""

    def __init__(self, network: Network, name: str, address: str) -> None:
        self.network = network
        self.name = name
        self.namespace = f"{network.prefix}-{name}"
        self.address = address
        self.port = f"p-{name}"[:15]  # its end on the bridge
        self.processes: list[subprocess.Popen[bytes]] = []

    def command(self, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.namespace, *argv]

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        log: IO[bytes] | int = subprocess.DEVNULL,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in this host, in a process group of its own (`ip netns exec`
        execs it, so the child's pid is the program's)."""
        process = subprocess.Popen(
            self.command(argv),
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        timeout: float,
        cwd: Path | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(argv),
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} in host {self.name} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def cut(self) -> None:
        """Pull the host's cable: its bridge port goes down, its packets go nowhere."""
        ip("link", "set", self.port, "down", namespace=self.network.bridge_namespace)

    def restore(self) -> None:
        ip("link", "set", self.port, "up", namespace=self.network.bridge_namespace)

    def pids(self) -> list[int]:
        """Every process living in this host's namespace, ours or their children."""
        listing = subprocess.run(
            [IP, "netns", "pids", self.namespace],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        return [int(pid) for pid in listing.split()]

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGCONT)  # a stopped one cannot die otherwise
                    os.killpg(process.pid, signal.SIGKILL)
        for pid in self.pids():  # daemons that left their group (pg_ctl's postgres)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


class Network:
    """A bridge in a namespace of its own, the hosts on it, and the test process's way in."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(3)
        self.prefix = f"gv-{self.id}"
        self.bridge_namespace = f"{self.prefix}-net"
        self.subnet = _free_subnet()
        self._addresses = iter(self.subnet.hosts())
        self.gateway = str(next(self._addresses))  # the root namespace's end
        self.root_link = f"gv{self.id}"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._make_bridge()

    def _make_bridge(self) -> None:
        self._add_namespace(self.bridge_namespace)
        ip("link", "add", "br0", "type", "bridge", namespace=self.bridge_namespace)
        ip("link", "set", "br0", "up", namespace=self.bridge_namespace)
        # The test process's way in: a veth from the root namespace to the bridge.
        ip("link", "add", self.root_link, "type", "veth", "peer", "name", "p-root")
        ip("link", "set", "p-root", "netns", self.bridge_namespace)
        ip("link", "set", "p-root", "master", "br0", "up", namespace=self.bridge_namespace)
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("link", "set", "lo", "up", namespace=name)

    def add_host(self, name: str) -> Host:
        """A new host on the bridge: its namespace, lo up, eth0 with the next address."""
        host = Host(self, name, str(next(self._addresses)))
        self._add_namespace(host.namespace)
        # Made inside the bridge's namespace, the peer going straight into the host's:
        # the root namespace never sees either end.
        ip(
            *("link", "add", host.port, "type", "veth"),
            *("peer", "name", "eth0", "netns", host.namespace),
            namespace=self.bridge_namespace,
        )
        ip("link", "set", host.port, "master", "br0", "up", namespace=self.bridge_namespace)
        ip(
            "addr",
            "add",
            f"{host.address}/{self.subnet.prefixlen}",
            "dev",
            "eth0",
            namespace=host.namespace,
        )
        ip("link", "set", "eth0", "up", namespace=host.namespace)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Kill what runs in the hosts, delete every namespace (and with them the veths)."""
        for host in self.hosts.values():
            host.kill_all()
        for name in reversed(self._namespaces):
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", name)
        # The root end goes with its peer; make sure, whatever happened above.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/sys/class/net/{self.root_link}").exists():
            with contextlib.suppress(RuntimeError):
                ip("link", "del", self.root_link)
            time.sleep(0.1)
