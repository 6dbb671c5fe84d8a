"""The KubeRay manifests against KubeRay's RayJob/RayCronJob schemas (tests/fixtures), and the
properties the schema cannot see: autoscaling on, no overlapping nightly runs, no keys."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from .fixtures.kuberay_v1_schema import RAY_CRON_JOB, RAY_JOB

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


def _load(name):
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def _check_job_spec(spec: dict) -> None:
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no encode work on the head
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 < group["maxReplicas"]
        assert all(c["resources"]["limits"].get("nvidia.com/gpu") for c in group["template"]["spec"]["containers"])
    # the console script joins the cluster by itself, and asks the autoscaler for its workers
    assert spec["entrypoint"].startswith("lowrank-batch encode ") and "--address" not in spec["entrypoint"]
    assert "--gpus-per-worker" in spec["entrypoint"] and "--wait-for-resources" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] == 0


def _period_seconds(schedule: str) -> int:
    """The period of a simple cron schedule: 'M H * * *' is daily; anything else is refused here."""
    minute, hour, dom, month, dow = schedule.split()
    if minute.isdigit() and hour.isdigit() and dom == month == dow == "*":
        return DAY
    raise AssertionError(f"schedule {schedule!r}: only daily schedules are checked for overlap")


def test_rayjob_validates_against_kuberays_schema():
    job = _load("kuberay-rayjob.yaml")
    jsonschema.validate(job, RAY_JOB)
    _check_job_spec(job["spec"])


def test_raycronjob_validates_and_its_runs_cannot_overlap():
    cron = _load("kuberay-raycronjob.yaml")
    jsonschema.validate(cron, RAY_CRON_JOB)
    template = cron["spec"]["jobTemplate"]
    _check_job_spec(template)
    # RayCronJob has no concurrency policy: each run is cut off before the next one starts,
    # leaving an hour to tear its cluster down
    assert template["activeDeadlineSeconds"] <= _period_seconds(cron["spec"]["schedule"]) - 3600


def test_the_schema_refuses_fields_kuberay_does_not_define():
    cron = _load("kuberay-raycronjob.yaml")
    bad = copy.deepcopy(cron)
    bad["spec"]["concurrencyPolicy"] = "Forbid"  # a batch/v1 CronJob field, not a RayCronJob one
    with pytest.raises(jsonschema.ValidationError, match="concurrencyPolicy"):
        jsonschema.validate(bad, RAY_CRON_JOB)
    bad = copy.deepcopy(cron)
    bad["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-gpus": 1}
    with pytest.raises(jsonschema.ValidationError):  # rayStartParams values are strings
        jsonschema.validate(bad, RAY_CRON_JOB)


def test_no_credentials_in_the_manifests():
    for name in ("kuberay-rayjob.yaml", "kuberay-raycronjob.yaml", "Dockerfile"):
        text = (ROOT / "examples" / name).read_text().lower()
        for secret in ("aws_access_key", "aws_secret", "secretaccesskey", "password", "token:"):
            assert secret not in text, (name, secret)
