"""cluster.yaml against the cluster-launcher schema that ships inside the ray package, and the
Ray conventions for a GPU cluster that the schema does not check."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_is_valid_for_the_ray_launcher():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    # the head takes no encode work: no GPU, and CPU 0 so actors and decode tasks go to workers
    assert head["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] > t["min_workers"] == 0
                           for t in workers)
    # Ray's GPU image on the GPU nodes, its CPU image on the head; the package installed into it
    docker = config["docker"]
    assert docker["worker_image"].startswith("rayproject/ray:") and docker["worker_image"].endswith("-gpu")
    assert docker["head_image"].startswith("rayproject/ray:") and "gpu" not in docker["head_image"]
    assert f"rayproject/ray:{ray.__version__}-py311" in docker["worker_image"]  # the Ray the package is tested with
    assert any("pip install" in c and "/home/ray/lowrank_batch" in c for c in config["setup_commands"])
    # every node reaches the buckets through an instance profile; no AMI placeholder
    for t in types.values():
        assert t["node_config"]["IamInstanceProfile"]["Name"]
        assert not t["node_config"]["ImageId"].startswith("ami-0123456789")
    text = (ROOT / "cluster.yaml").read_text().lower()
    for secret in ("aws_access_key", "aws_secret", "secretaccesskey", "password", "token:"):
        assert secret not in text
