"""Faults of object storage: which errors pass (an outage, a restart, throttling) and how
long a worker keeps trying before an image or unit is put on record as failed.

s3fs and botocore retry a few times within ~5 s; an S3 server that is down for longer
raises botocore's EndpointConnectionError, which is not an OSError. These retries sit above
theirs, bounded by one outage clock per process: the deadline runs from the first error of
an outage, not per call, so a store that stays down fails the job's images in minutes, not
days, and any success starts the clock afresh.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity

T = TypeVar("T")

# what sockets say while a server restarts or a link drops
_NETWORK_ERRNOS = {errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE}
# codes object stores use for "slow down"; HTTP 5xx and 429 are transient whatever their code
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded",
                   "RequestTimeout", "ServiceUnavailable", "InternalError"}


def _network_errors() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:  # s3fs's own list: timeouts, HTTP client errors, incomplete reads, unparsable replies
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from s3fs.core import S3_RETRYABLE_ERRORS

        kinds += [BotoConnectionError, *S3_RETRYABLE_ERRORS]
    except ImportError:  # no S3 support installed
        from fsspec.exceptions import FSTimeoutError

        kinds.append(FSTimeoutError)
    try:
        from aiohttp import ClientConnectionError

        kinds.append(ClientConnectionError)
    except ImportError:
        pass
    return tuple(kinds)


def _permanent_network_errors() -> tuple[type[BaseException], ...]:
    try:  # a bad certificate or proxy does not heal by waiting
        from botocore.exceptions import ProxyConnectionError, SSLError

        return (SSLError, ProxyConnectionError)
    except ImportError:
        return ()


_NETWORK, _PERMANENT = _network_errors(), _permanent_network_errors()


def _remote_status(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, error code) of a store's reply, from a botocore ClientError or an OSError
    s3fs made of one (it keeps the ClientError as __cause__)."""
    for e in (exc, exc.__cause__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return (int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0),
                    str(response.get("Error", {}).get("Code") or ""))
    return None


def is_transient(exc: BaseException) -> bool:
    """True for errors that waiting can fix: the store unreachable, a timeout, a 5xx or 429,
    throttling. Not a full disk, a denial, a missing file, or a local EBUSY."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, _NETWORK):
        return True
    remote = _remote_status(exc)
    if remote is not None:
        status, code = remote
        return status >= 500 or status == 429 or code in _THROTTLE_CODES
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


def is_storage_error(exc: BaseException) -> bool:
    """Errors of reading or writing bytes (after any retries): a failure of that file or unit,
    not a bug. botocore's own errors (no credentials, bad endpoint) are not OSErrors."""
    if isinstance(exc, OSError) or is_transient(exc):
        return True
    return _from_storage_library(exc)


def describe(exc: BaseException) -> str:
    """What went wrong, for failure records and logs (the error's type is recorded beside it):
    the store's code and status, never the store's own text, which can quote account ARNs or
    URLs with user info. A local file system's text (errno, reason, our own path) is kept."""
    remote = _remote_status(exc)
    if remote is not None:
        status, code = remote
        return f"the store answered {code or 'an error'} (HTTP {status})"
    if isinstance(exc, OSError) and not _is_from_a_store(exc):
        return str(exc)[:500]
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {errno.errorcode.get(exc.errno, '')}".rstrip()
    if is_transient(exc):
        return "the store could not be reached"
    return f"storage error {type(exc).__name__}"


def _is_from_a_store(exc: BaseException) -> bool:
    """An OSError that a store client made of its own error (s3fs keeps it as the cause)."""
    return exc.__cause__ is not None and _from_storage_library(exc.__cause__)


_STORAGE_LIBRARIES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "aiohttp")


def _from_storage_library(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in _STORAGE_LIBRARIES


@dataclass(frozen=True)
class RetryPolicy:
    """Keep retrying transient errors for `seconds` from the start of an outage, waiting
    `first_wait` then doubling, with jitter, up to `max_wait` between attempts."""

    seconds: float = 300.0
    first_wait: float = 0.5
    max_wait: float = 10.0

    def __post_init__(self) -> None:
        if not self.seconds >= 0 or not 0 < self.first_wait <= self.max_wait:
            raise ValueError(f"retry seconds must be >= 0 and 0 < first_wait <= max_wait, got {self}")


class Retrier:
    """Runs storage calls under one outage clock (one per worker process): retries transient
    errors until `policy.seconds` after the outage began; past that, each call gets a single
    attempt until one succeeds and ends the outage."""

    def __init__(self, policy: RetryPolicy = RetryPolicy(), clock: Callable[[], float] = time.monotonic):
        self.policy, self.clock = policy, clock
        self.outage_since: float | None = None
        self.retries = 0  # attempts made again after a transient error, in this process

    def __call__(self, call: Callable[[], T]) -> T:
        """call(), again after each transient error while the outage clock allows; then its
        last error is raised as is. Other errors are raised at once."""
        def out_of_time(_state: tenacity.RetryCallState) -> bool:
            if self.outage_since is None:
                self.outage_since = self.clock()
            return self.clock() - self.outage_since >= self.policy.seconds

        def count(_state: tenacity.RetryCallState) -> None:
            self.retries += 1

        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient), stop=out_of_time, before_sleep=count, reraise=True,
            wait=tenacity.wait_exponential_jitter(multiplier=self.policy.first_wait, jitter=self.policy.first_wait,
                                                  max=self.policy.max_wait))
        result = retryer(call)
        self.outage_since = None  # it answered: the outage, if any, is over
        return result


def retrying(call: Callable[[], T], policy: RetryPolicy) -> T:
    """One call under a clock of its own (the driver's steps, which run once per job)."""
    return Retrier(policy)(call)
