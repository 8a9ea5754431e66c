"""RUN_DIR/learner.address: where actors on other machines find a running learner.

The learner writes it itself once its sockets are bound, never before (the file
means "a learner listens here"), with a host name other machines can reach (not
0.0.0.0), and removes it when it exits. A learner that is killed outright leaves
it behind; the next learner of the run replaces it when it binds, and actors that
find a stale one give up after their connect deadline (`mouse actor --connect-timeout-s`).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

ADDRESS_FILE = "learner.address"
WILDCARD_HOSTS = ("0.0.0.0", "*", "::", "[::]")


def advertised(address: str, advertise_host: str = "") -> str:
    """The address actors should use: ``advertise_host`` if given, and this machine's fully
    qualified name in place of a wildcard bind host; inproc:// addresses pass unchanged."""
    m = re.fullmatch(r"tcp://(.+):(\d+)", address)
    if m is None:
        return address
    host = advertise_host or m.group(1)
    if host in WILDCARD_HOSTS:
        host = this_host()
    return f"tcp://{host}:{m.group(2)}"


def this_host() -> str:
    """This machine's fully qualified name, or its host name where that lookup finds only a
    loopback name (an /etc/hosts that maps the host name to 127.0.0.1 after "localhost")."""
    fqdn = socket.getfqdn()
    return socket.gethostname() if fqdn.startswith("localhost") else fqdn


def publish(run_dir: Path, address: str) -> None:
    """Write RUN_DIR/learner.address in one step (readers never see half of it); tcp only."""
    if not address.startswith("tcp://"):
        return
    path = Path(run_dir) / ADDRESS_FILE
    tmp = path.with_name(f".{ADDRESS_FILE}.{os.getpid()}")
    tmp.write_text(address + "\n")
    os.replace(tmp, path)


def withdraw(run_dir: Path, address: str) -> None:
    """Remove RUN_DIR/learner.address if it still names ``address`` (not a newer learner's)."""
    path = Path(run_dir) / ADDRESS_FILE
    try:
        if path.read_text().strip() == address:
            path.unlink()
    except FileNotFoundError:
        pass
