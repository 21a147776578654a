"""A throw-away lab client: a network namespace with one address on the lab bridge.

Tests that must come from an address that is neither the lab host nor a trusted host (an
attacker for fail2ban, a stranger for the firewall) make one with `client(...)`; it is removed
again when the `with` block ends, also after a failure.
"""
import contextlib
import subprocess
import sys

BRIDGE = "labbr0"

# Run inside the namespace: try a TCP connection, print open / refused / timeout.
_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    if len(sys.argv) > 4:
        print("open " + s.recv(200).decode(errors="replace").strip())
    else:
        print("open")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("error " + str(exc))
"""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Client:
    """A namespace `name` whose interface holds `address` on the lab bridge."""

    def __init__(self, name, address):
        self.name, self.address = name, address

    def run(self, argv, timeout=120, check=True):
        """Run `argv` inside the namespace; returns the CompletedProcess."""
        result = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"in netns {self.name}, {argv} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def python(self, code, *args, timeout=120):
        """stdout of a Python snippet run inside the namespace."""
        return self.run([sys.executable, "-c", code, *map(str, args)], timeout=timeout).stdout

    def probe(self, host, port, timeout=3.0, banner=False):
        """"open" (with the first line of a banner if asked), "refused" or "timeout"."""
        args = [host, port, timeout] + (["banner"] if banner else [])
        return self.python(_PROBE, *args).strip()


@contextlib.contextmanager
def client(name, address, prefixlen=24):
    """A lab client in a new network namespace; everything it made is removed afterwards."""
    host_end, ns_end = f"{name}-h", f"{name}-n"
    _cleanup(name, host_end)
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", name)
        _ip("link", "set", host_end, "master", BRIDGE, "up")
        _ip("-n", name, "addr", "add", f"{address}/{prefixlen}", "dev", ns_end)
        _ip("-n", name, "link", "set", ns_end, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Client(name, address)
    finally:
        _cleanup(name, host_end)


def _cleanup(name, host_end):
    _ip("link", "del", host_end, check=False)
    _ip("netns", "del", name, check=False)
