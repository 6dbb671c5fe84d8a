import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray binds 127.0.0.1 only (as the product's start_ray does); nothing asks a cloud metadata service
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# the weight store of a test run lives in its own folder, never in ~/.cache
os.environ["LOWRANK_HOME"] = tempfile.mkdtemp(prefix="lowrank-test-home-")


@pytest.fixture(scope="session")
def codec():
    from lowrank_batch import Codec

    return Codec.load()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def smooth_image(rng, shape, bits, signed=False):
    """A test image with structure (smooth field + edges + noise), not just noise."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    maxval = (1 << bits) - 1
    base = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 0.15 * (xx > w // 2)
    img = base * maxval + rng.normal(0, maxval * 0.01, (h, w))
    if len(shape) == 3:
        img = np.stack([img * (0.8 + 0.1 * c) for c in range(shape[2])], axis=2)
    img = np.clip(np.rint(img), 0, maxval).astype(np.int64)
    if signed:
        img -= 1 << (bits - 1)
        return img.astype(np.int16 if bits > 8 else np.int8)
    return img.astype(np.uint16 if bits > 8 else np.uint8)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """SeaweedFS first (its AWS_* settings reach the Ray workers), then a local Ray with
    two fake GPUs, shared by every job test."""
    import ray

    from .s3server import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("s3"), buckets=("src", "archive")) as endpoint:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            yield endpoint
        finally:
            ray.shutdown()
