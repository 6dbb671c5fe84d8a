"""The linear core: SVD fit, patch layout, exact integer projection and reconstruction."""

import numpy as np
import pytest

from lowrank_batch.codec import lowrank as lr
from lowrank_batch.errors import InvalidParameterError


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 17, 30), (3, 9, 8), (1, 3, 40)])
def test_patchify_round_trip(rng, shape):
    planes = rng.integers(0, 1000, shape)
    patches = lr.patchify(planes, 8)
    assert patches.shape[1] == 64 * shape[0]
    assert np.array_equal(lr.unpatchify(patches, 8, shape[0], *shape[1:]), planes)


def test_fit_svd_gives_an_orthonormal_basis_sorted_by_energy(rng):
    imgs = [rng.random((1, 40, 40)).cumsum(axis=2) / 40 for _ in range(3)]
    core = lr.fit_svd(imgs, patch=8)
    basis = core.basis.astype(np.float64)
    assert basis.shape == (64, 64)
    assert np.allclose(basis.T @ basis, np.eye(64), atol=1e-5)
    x = np.concatenate([lr.patchify(i, 8) for i in imgs]) - core.mean
    energy = ((x @ basis) ** 2).sum(axis=0)
    assert np.all(np.diff(energy) <= 1e-6 * energy[0])
    again = lr.fit_svd(imgs, patch=8)
    assert np.array_equal(core.basis, again.basis)


def test_full_rank_fine_step_reconstructs_nearly_exactly(rng):
    imgs = [rng.random((1, 96, 96)) for _ in range(2)]  # 288 patches: all 64 components
    core = lr.fit_svd(imgs, patch=8)
    planes = rng.integers(0, 4096, (1, 37, 29))
    q = lr.project(planes, core, 4095, 64, 1e-4)
    recon = lr.reconstruct(q, core, 4095, 1e-4, 1, 37, 29)
    assert np.abs(recon - planes).max() <= 1


def test_reconstruction_is_integer_exact_under_reordering(rng):
    """Products are integers below 2**53, so summation order cannot change the result."""
    imgs = [rng.random((1, 32, 32)) for _ in range(2)]
    core = lr.fit_svd(imgs, patch=8)
    planes = rng.integers(0, 65536, (1, 64, 64))
    q = lr.project(planes, core, 65535, 16, 0.01)
    a = lr.reconstruct(q, core, 65535, 0.01, 1, 64, 64)
    reversed_core = lr.LowRankCore(8, 1, core.mean, core.basis)
    b = lr.reconstruct(q[::-1, ::-1].copy(), reversed_core, 65535, 0.01, 1, 64, 64)
    assert np.array_equal(a, lr.reconstruct(q, reversed_core, 65535, 0.01, 1, 64, 64))
    assert a.dtype == np.int64 and not np.array_equal(a, b)  # sanity: input order matters, sums do not


def test_bad_core_configuration():
    with pytest.raises(InvalidParameterError, match="patch size"):
        lr.LowRankCore(7, 1, np.zeros(49, np.float32), np.zeros((49, 49), np.float32))
    with pytest.raises(InvalidParameterError, match="fit_svd needs"):
        lr.fit_svd([], patch=8)
    small = lr.fit_svd([np.random.default_rng(0).random((1, 16, 16))], patch=8)  # 4 patches: rank 4
    with pytest.raises(InvalidParameterError, match="rank must be from 1 to 4"):
        lr.project(np.zeros((1, 16, 16), np.int64), small, 255, 8, 0.1)


def test_torch_path_gives_the_same_bits_as_numpy(rng):
    """Same integers through another BLAS (torch, CPU here; the gpu test runs it on CUDA)."""
    imgs = [rng.random((1, 64, 64)) for _ in range(2)]
    core = lr.fit_svd(imgs, patch=8)
    planes = rng.integers(0, 65536, (1, 61, 70))
    for step in (1e-4, 0.01, 0.3):
        q = lr.project(planes, core, 65535, 32, step)
        a = lr.reconstruct(q, core, 65535, step, 1, 61, 70)
        b = lr.reconstruct(q, core, 65535, step, 1, 61, 70, device="cpu")
        assert np.array_equal(a, b)
