"""With an autoscaler the job asks for its workers and waits (bounded); without one it fails fast."""

import json

import pytest

from lowrank_batch.pipeline.job import JobError, JobOptions, _wait_for_workers, plan_workers
from lowrank_batch.pipeline.resources import ResourceWaitError, configured_node_types, request_and_wait


class FakeCluster:
    """cluster_resources() as an autoscaler grows the cluster: one more GPU node per poll."""

    def __init__(self, nodes_after_request: list[dict]):
        self.states = [{"CPU": 2.0}] + nodes_after_request
        self.polls = 0
        self.requests = []

    def cluster_resources(self):
        state = self.states[min(self.polls, len(self.states) - 1)] if self.requests else self.states[0]
        self.polls += 1 if self.requests else 0
        return state

    def request(self, bundles):
        self.requests.append(bundles)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_asks_the_autoscaler_for_the_bundles_and_waits_for_them():
    cluster, clock = FakeCluster([{"CPU": 2.0}, {"CPU": 10.0, "GPU": 1.0}, {"CPU": 18.0, "GPU": 2.0}]), Clock()
    resources = request_and_wait(cluster, 2, 1.0, 1.0, 60, log=lambda *_: None, request=cluster.request,
                                 clock=clock, sleep=clock.sleep)
    assert resources == {"CPU": 18.0, "GPU": 2.0}
    assert cluster.requests == [[{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]]


def test_waiting_is_bounded_with_a_message_saying_what_was_asked_and_what_came():
    cluster, clock = FakeCluster([{"CPU": 10.0, "GPU": 1.0}]), Clock()
    with pytest.raises(ResourceWaitError) as err:
        request_and_wait(cluster, 4, 1.0, 1.0, 30, log=lambda *_: None, request=cluster.request,
                         clock=clock, sleep=clock.sleep)
    message = str(err.value)
    assert "asked the autoscaler for 4 workers" in message and "after 30 s the cluster has 1 GPUs" in message
    assert 30 <= clock.now <= 32


def test_enough_up_already_asks_for_nothing():
    cluster = FakeCluster([])
    cluster.states[0] = {"CPU": 4.0, "GPU": 2.0}
    assert request_and_wait(cluster, 2, 1.0, 1.0, 5, request=cluster.request) == {"CPU": 4.0, "GPU": 2.0}
    assert cluster.requests == []


def test_autoscaler_detection_reads_the_monitor_report():
    readonly = {"autoscaler_report": {"active_nodes": {"node_ab12": 1}, "pending_launches": {}}}
    launcher = {"autoscaler_report": {"active_nodes": {"head": 1}, "pending_launches": {"gpu_worker": 2}}}
    assert not configured_node_types(json.dumps(readonly).encode())
    assert configured_node_types(json.dumps(launcher).encode())
    assert not configured_node_types(None) and not configured_node_types(b"not json")


def test_without_an_autoscaler_the_job_sizes_from_what_is_up_and_fails_fast(cluster):
    """The local test cluster has no autoscaler: nothing is requested, and a GPU request it
    cannot meet still fails at once (plan_workers)."""
    import ray

    resources, asked = _wait_for_workers(ray, JobOptions(gpus_per_worker=4), 3, log=lambda *_: None)
    assert asked is None and resources == ray.cluster_resources()
    with pytest.raises(JobError, match="asked for 4 GPU per worker but the cluster has 2 GPUs.*--wait-for-resources"):
        plan_workers(resources, JobOptions(gpus_per_worker=4))
