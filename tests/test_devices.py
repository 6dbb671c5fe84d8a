"""Encode actors use the GPU Ray assigned to them (checked on CPU with Ray's fake GPUs)."""

import pytest

from lowrank_batch.errors import LowrankError
from lowrank_batch.pipeline.devices import choose_device
from lowrank_batch.pipeline.job import JobOptions, plan_workers
from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker


def test_device_is_the_assigned_gpu():
    assert choose_device([], None, True, 4) == ("cpu", None)
    assert choose_device(["3"], "3", True, 1) == ("cuda:0", None)  # Ray narrowed CUDA_VISIBLE_DEVICES to it
    assert choose_device([2], "0,1,2,3", True, 4) == ("cuda:2", None)  # shared visibility: its own index
    assert choose_device(["1"], None, True, 2) == ("cuda:1", None)  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES
    with pytest.raises(LowrankError, match="torch sees 1 CUDA devices"):
        choose_device(["5"], None, True, 1)


def test_assigned_gpu_without_cuda_runs_on_cpu_and_says_so():
    device, note = choose_device(["0"], "0", False, 0)
    assert device == "cpu" and "assigned GPU 0" in note and "ran on the CPU" in note


def test_each_gpu_actor_gets_its_own_gpu_as_cuda_0(cluster, tmp_path):
    import ray
    import torch

    workers, gpus, cpus = plan_workers(ray.cluster_resources(), JobOptions())
    actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(EncodeWorker)
    actors = [actor.remote(str(tmp_path / "a"), "run", EncodeSettings()) for _ in range(workers)]
    try:
        infos = ray.get([a.info.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    assert sorted(i["gpu_ids"][0] for i in infos) == ["0", "1"]
    for info in infos:  # what each actor would pick on a machine where torch sees its GPU
        assert choose_device(info["gpu_ids"], info["cuda_visible_devices"], True, 1) == ("cuda:0", None)
        assert info["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
