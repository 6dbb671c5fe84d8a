"""Starting or joining Ray: the one place that knows which environment Ray must see first.

Used by the encode and decode jobs and by `report --address`; it imports nothing of the
package, so any layer may start Ray without importing a job.
"""

from __future__ import annotations

import os


def start_ray(address: str | None):
    """Join `address`; else the cluster named by RAY_ADDRESS (set inside `ray job submit`, where
    `ray.init(num_cpus=...)` is refused); else start a local Ray in this process."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    # before `import ray`: Ray reads these when it is imported
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:  # a local Ray in this process: loopback only (else it listens on every interface);
        # never for a cluster, whose driver must see its node's real address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # nothing outside this machine can reach it
    import ray

    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    return ray
