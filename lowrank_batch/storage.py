"""Faults of object storage: which errors pass (an outage, a restart, throttling) and how
long a job keeps trying before an image or unit is put on record as failed.

s3fs and botocore retry a few times within ~5 s; an S3 server that is down for longer
raises botocore's EndpointConnectionError, which is not an OSError. These retries sit above
theirs, bounded by a deadline, so a short outage costs time, not images.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity
from fsspec.exceptions import FSTimeoutError

T = TypeVar("T")

# what s3fs turns HTTP 500/503 and throttling into, and what sockets say while a server restarts;
# ENOSPC, EACCES, ENOENT are not here: waiting does not fix them
_TRANSIENT_ERRNOS = {errno.EBUSY, getattr(errno, "EREMOTEIO", 121), errno.ETIMEDOUT, errno.ECONNRESET,
                     errno.ECONNREFUSED, errno.ECONNABORTED, errno.EAGAIN, errno.EPIPE}


def _network_errors() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError, FSTimeoutError]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError

        kinds += [BotoConnectionError, HTTPClientError]
    except ImportError:  # no S3 support installed
        pass
    try:
        from aiohttp import ClientConnectionError, ClientPayloadError

        kinds += [ClientConnectionError, ClientPayloadError]
    except ImportError:
        pass
    return tuple(kinds)


_NETWORK = _network_errors()


def is_transient(exc: BaseException) -> bool:
    """True for errors that waiting can fix: the store unreachable, a timeout, a 5xx, throttling."""
    if isinstance(exc, _NETWORK):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    response = getattr(exc, "response", None)  # botocore ClientError not translated by s3fs
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or response.get("Error", {}).get("Code") in ("SlowDown", "Throttling")
    return False


def is_storage_error(exc: BaseException) -> bool:
    """Errors of reading or writing bytes (after any retries): a failure of that file or unit,
    not a bug. botocore's own errors (no credentials, bad endpoint) are not OSErrors."""
    if isinstance(exc, OSError) or is_transient(exc):
        return True
    return type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs")


@dataclass(frozen=True)
class RetryPolicy:
    """Keep retrying transient errors for `seconds` (from the first attempt), waiting
    `first_wait` then doubling, with jitter, up to `max_wait` between attempts."""

    seconds: float = 300.0
    first_wait: float = 0.5
    max_wait: float = 10.0


def retrying(call: Callable[[], T], policy: RetryPolicy, on_retry: Callable[[BaseException], None] | None = None) -> T:
    """call(), again after each transient error until the policy's deadline; then its last
    error is raised as is. Other errors are raised at once."""
    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.outcome.exception())

    retryer = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_delay(policy.seconds),
        wait=tenacity.wait_exponential_jitter(multiplier=policy.first_wait, jitter=policy.first_wait,
                                             max=policy.max_wait),
        before_sleep=before_sleep, reraise=True)
    return retryer(call)
