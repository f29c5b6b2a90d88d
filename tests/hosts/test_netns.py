"""The test hosts themselves: reachable over their bridge only, a cut link goes
silent, and nothing of theirs outlives the network."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import pytest

from tests.hosts.netns import IP, Network

pytestmark = [pytest.mark.hosts]

SERVE = (
    "import socket, sys\n"
    "server = socket.create_server((sys.argv[1], 7000))\n"
    "while True: server.accept()[0].sendall(b'hi')"
)
CONNECT = (
    "import socket, sys\n"
    "print(socket.create_connection((sys.argv[1], 7000), timeout=1).recv(2).decode())"
)


def _connect(host, address: str) -> str:
    done = host.run([sys.executable, "-c", CONNECT, address], env={}, timeout=10, check=False)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def test_hosts_reach_each_other_over_the_bridge_and_a_cut_link_goes_silent(
    network: Network,
) -> None:
    web, worker = network.add_host("web"), network.add_host("worker")
    assert ipaddress.ip_address(web.address) in ipaddress.ip_network("198.18.0.0/15")
    web.popen([sys.executable, "-c", SERVE, web.address], env={})
    deadline = time.monotonic() + 10
    while _connect(worker, web.address) != "hi" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _connect(worker, web.address) == "hi"
    # Its own loopback is its own: nothing listens on the worker's 127.0.0.1:7000.
    assert "refused" in _connect(worker, "127.0.0.1").lower()

    web.cut()
    assert "timed out" in _connect(worker, web.address)
    web.restore()
    assert _connect(worker, web.address) == "hi"


def test_a_network_leaves_no_namespace_process_or_address_behind(namespaces: None) -> None:
    network = Network()
    host = network.add_host("web")
    sleeper = host.popen(["sleep", "60"], env={})
    root_addresses = subprocess.run(
        [IP, "-4", "-o", "addr", "show", "dev", network.root_link],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{network.gateway}/24" in root_addresses

    network.close()

    assert sleeper.poll() is not None
    namespaces = subprocess.run([IP, "netns", "list"], capture_output=True, text=True).stdout
    assert network.prefix not in namespaces
    links = subprocess.run([IP, "-o", "link", "show"], capture_output=True, text=True).stdout
    assert network.root_link not in links
