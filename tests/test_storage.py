"""Which storage errors are waited out, and the deadline that bounds the waiting."""

import errno
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from lowrank_batch.storage import RetryPolicy, is_storage_error, is_transient, retrying

FAST = RetryPolicy(seconds=0.5, first_wait=0.01, max_wait=0.05)


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("exc", [
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),  # the S3 server is down
    ConnectionRefusedError(), TimeoutError(),
    OSError(errno.EBUSY, "SlowDown"),  # what s3fs makes of 503
    OSError(errno.EREMOTEIO, "InternalError"),  # ... and of 500
    client_error(503, "ServiceUnavailable"), client_error(400, "SlowDown"),
])
def test_outages_and_server_errors_are_transient(exc):
    assert is_transient(exc) and is_storage_error(exc)


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),  # waiting does not free a disk
    FileNotFoundError(errno.ENOENT, "gone"), PermissionError(errno.EACCES, "denied"),
    client_error(403, "AccessDenied"), NoCredentialsError(),
])
def test_errors_waiting_cannot_fix_are_not_retried(exc):
    assert not is_transient(exc)
    assert is_storage_error(exc)  # still a failure of that file, not a bug


def test_bugs_are_not_storage_errors():
    assert not is_storage_error(ValueError("a bug")) and not is_storage_error(KeyError("k"))


def test_retrying_waits_out_a_short_outage_and_counts_it():
    calls, seen = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return "data"

    assert retrying(flaky, FAST, seen.append) == "data"
    assert len(calls) == 3 and len(seen) == 2 and all(isinstance(e, EndpointConnectionError) for e in seen)


def test_retrying_gives_up_at_its_deadline_with_the_last_error():
    start = time.monotonic()
    with pytest.raises(EndpointConnectionError):
        retrying(lambda: (_ for _ in ()).throw(EndpointConnectionError(endpoint_url="http://x")), FAST)
    assert 0.4 < time.monotonic() - start < 3


def test_a_full_disk_fails_at_once():
    calls = []

    def full():
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        retrying(full, RetryPolicy(seconds=60))
    assert len(calls) == 1
