"""``ray start`` pinned to the loopback interface, for the test cluster.

Ray replaces a loopback ``--node-ip-address`` by the machine's outward address, so nodes
would talk to each other over a non-loopback interface. Tests must only use 127.0.0.1,
so this wrapper (and the test process, through :func:`loopback_only`) keeps them there.
"""

from __future__ import annotations

import sys


def loopback_only() -> None:
    from ray._private import services

    services.get_node_ip_address = lambda address=None: "127.0.0.1"
    services.resolve_ip_for_localhost = lambda host: host


if __name__ == "__main__":
    loopback_only()
    from ray.scripts.scripts import main

    sys.argv = ["ray", *sys.argv[1:]]
    main()
