"""cluster.yaml against the cluster-launcher schema that ships inside the ray package."""

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
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] > t["min_workers"] for t in types.values())
    text = (ROOT / "cluster.yaml").read_text().lower()
    assert "torch==2.13.0" in text and "pip install -e" in text
    for secret in ("aws_access_key", "aws_secret", "password", "token:"):
        assert secret not in text
