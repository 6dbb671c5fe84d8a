"""Asking an autoscaling cluster for the workers a job needs, and waiting for them (bounded).

Without an autoscaler a job sizes itself from what is up and fails at once when a GPU request
cannot be met (Ray would leave such actors pending forever). With one (the cluster launcher's,
or KubeRay's in-tree autoscaler) nodes appear only when asked: the job requests its workers'
bundles (ray.autoscaler.sdk.request_resources) and waits until the cluster holds them.
"""

from __future__ import annotations

import json
import time

from ..errors import LowrankError

DEFAULT_WAIT_SECONDS = 900.0  # when an autoscaler is detected and --wait-for-resources is not given


class ResourceWaitError(LowrankError):
    """The autoscaler did not provide the requested workers in time."""


def autoscaler_present(ray) -> bool:
    """Whether an autoscaler that can add nodes watches this cluster: autoscaler v2 (KubeRay's
    v2 mode), or v1 reporting node types of its own config. A cluster without one (a local
    Ray, `ray start` by hand) runs v1 in read-only mode, whose node types are its nodes' ids
    ("node_<hex>")."""
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            return True
    except Exception:  # older Ray, or no GCS answer: fall back to the v1 report
        pass
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    except Exception:
        return False
    return configured_node_types(raw)


def configured_node_types(raw: bytes | None) -> bool:
    """From the v1 monitor's status report: does it name node types of a launcher config?"""
    try:
        report = json.loads(raw or b"{}").get("autoscaler_report") or {}
    except (ValueError, AttributeError):
        return False
    types = set()
    for key in ("active_nodes", "idle_nodes", "pending_launches"):
        types |= set(report.get(key) or {})
    return any(not str(t).startswith("node_") for t in types)


def fits(resources: dict, workers: int, gpus: float, cpus: float) -> bool:
    return (float(resources.get("CPU", 0)) >= workers * cpus - 1e-9
            and float(resources.get("GPU", 0)) >= workers * gpus - 1e-9)


def request_and_wait(ray, workers: int, gpus: float, cpus: float, timeout: float, log=print,
                     request=None, poll: float = 2.0, clock=time.monotonic, sleep=time.sleep) -> dict:
    """Ask the autoscaler for `workers` bundles of {CPU: cpus, GPU: gpus} and wait until the
    cluster's resources hold them; the cluster's resources then. Raises ResourceWaitError after
    `timeout` seconds saying what was asked and what came."""
    bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    if request is None:
        from ray.autoscaler.sdk import request_resources as request
    resources = ray.cluster_resources()
    if fits(resources, workers, gpus, cpus):
        return resources
    request(bundles=[dict(bundle) for _ in range(workers)])
    log(f"asked the autoscaler for {workers} workers of {bundle}; waiting up to {timeout:.0f} s")
    deadline = clock() + timeout
    while not fits(resources, workers, gpus, cpus):
        if clock() >= deadline:
            raise ResourceWaitError(
                f"asked the autoscaler for {workers} workers of {bundle} ({workers * gpus:g} GPUs, "
                f"{workers * cpus:g} CPUs); after {timeout:.0f} s the cluster has {resources.get('GPU', 0):g} GPUs "
                f"and {resources.get('CPU', 0):g} CPUs. Check the autoscaler (`ray status`, its log: quota, "
                "instance availability, max_workers) or ask for fewer with --workers / --wait-for-resources")
        sleep(poll)
        resources = ray.cluster_resources()
    return resources


def release_request() -> None:
    """Withdraw this job's resource request (it stays in force until replaced)."""
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[])
    except Exception:  # the cluster is going away anyway; idle nodes time out by themselves
        pass
