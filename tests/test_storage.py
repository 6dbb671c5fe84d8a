"""Which storage errors are waited out, the outage clock that bounds the waiting, and what a
failure record may say about a store's error."""

import errno

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, SSLError
from s3fs.errors import translate_boto_error

from lowrank_batch.storage import Retrier, RetryPolicy, describe, is_storage_error, is_transient, retrying

FAST = RetryPolicy(seconds=0.5, first_wait=0.01, max_wait=0.05)
DOWN = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


def client_error(status: int, code: str, message: str = "x") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def translated(status: int, code: str) -> OSError:
    """What s3fs raises for a store's error reply: an OSError with the ClientError as cause."""
    try:
        raise translate_boto_error(client_error(status, code)) from client_error(status, code)
    except OSError as exc:
        return exc


@pytest.mark.parametrize("exc", [
    DOWN, ConnectionRefusedError(), TimeoutError(),
    client_error(503, "ServiceUnavailable"), client_error(400, "SlowDown"), client_error(429, "TooManyRequests"),
    translated(500, "InternalError"), translated(502, "BadGateway"), translated(503, "SlowDown"),
    translated(504, "GatewayTimeout"), translated(400, "Throttling"), translated(400, "ThrottlingException"),
], ids=lambda e: f"{type(e).__name__}:{getattr(e, 'errno', '')}:{describe(e)}")
def test_outages_server_errors_and_throttling_are_transient(exc):
    assert is_transient(exc) and is_storage_error(exc)


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),  # waiting does not free a disk
    OSError(errno.EBUSY, "Device or resource busy"),  # a local EBUSY (no store behind it)
    FileNotFoundError(errno.ENOENT, "gone"), PermissionError(errno.EACCES, "denied"),
    client_error(403, "AccessDenied"), translated(403, "AccessDenied"), translated(404, "NoSuchKey"),
    NoCredentialsError(), SSLError(endpoint_url="https://x", error="bad certificate"),
])
def test_errors_waiting_cannot_fix_are_not_retried(exc):
    assert not is_transient(exc)
    assert is_storage_error(exc)  # still a failure of that file, not a bug


def test_bugs_are_not_storage_errors():
    assert not is_storage_error(ValueError("a bug")) and not is_storage_error(KeyError("k"))


def test_a_store_s_text_never_reaches_a_record():
    leaky = client_error(403, "AccessDenied", "User: arn:aws:iam::123456789012:user/alice is not authorized")
    for exc in (leaky, translated(403, "AccessDenied")):
        assert describe(exc) == "the store answered AccessDenied (HTTP 403)"
    assert "arn:" not in describe(leaky)
    assert describe(DOWN) == "the store could not be reached" and "127.0.0.1" not in describe(DOWN)
    assert describe(OSError(errno.ENOSPC, "No space left on device")) == "[Errno 28] No space left on device"


def test_a_short_outage_is_waited_out_and_counted():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise DOWN
        return "data"

    retrier = Retrier(FAST)
    assert retrier(flaky) == "data"
    assert len(calls) == 3 and retrier.retries == 2 and retrier.outage_since is None  # over


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_deadline_runs_from_the_outage_start_not_per_call():
    """Past the deadline each call gets one attempt: a store that stays down fails a unit of
    16 files in 16 attempts, not 16 deadlines. A success ends the outage."""
    clock = FakeClock()
    retrier = Retrier(RetryPolicy(seconds=300, first_wait=0.001, max_wait=0.001), clock)
    attempts = []

    def down():
        attempts.append(1)
        clock.now += 100  # each attempt takes 100 s of the outage
        raise DOWN

    with pytest.raises(EndpointConnectionError):
        retrier(down)
    assert len(attempts) == 4  # tried at 0, 100, 200, 300 s since the outage began
    for _ in range(16):
        with pytest.raises(EndpointConnectionError):
            retrier(down)
    assert len(attempts) == 4 + 16
    assert retrier(lambda: "up") == "up" and retrier.outage_since is None
    attempts.clear()
    with pytest.raises(EndpointConnectionError):
        retrier(down)  # a new outage: a new deadline
    assert len(attempts) == 4


def test_one_call_gives_up_at_its_deadline_with_the_last_error():
    with pytest.raises(EndpointConnectionError):
        retrying(lambda: (_ for _ in ()).throw(DOWN), FAST)


def test_a_full_disk_fails_at_once():
    calls = []

    def full():
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        retrying(full, RetryPolicy(seconds=60))
    assert len(calls) == 1


def test_a_policy_must_make_sense():
    with pytest.raises(ValueError):
        RetryPolicy(seconds=-1)
    with pytest.raises(ValueError):
        RetryPolicy(first_wait=0)
