"""The DICOMweb service on Ray Serve: one deployment of replicas that each hold the archive's
index and the decoders; Serve's proxy answers HTTP at http://HOST:PORT/dicom-web.

Loopback by default; any other address only with an access token. Serve's access log is off:
request lines carry query values (PatientID=...), which must not reach a log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidParameterError

APP_NAME, ROUTE = "lowrank-dicomweb", "/dicom-web"


@dataclass(frozen=True)
class ServeOptions:
    archive: str
    host: str = "127.0.0.1"
    port: int = 8080
    token_file: str | None = None
    address: str | None = None  # None: a local Ray in this process
    replicas: int | None = None  # a fixed number; None: autoscale from 1 to max_replicas with load
    max_replicas: int = 2
    gpus_per_replica: float | None = None  # default: 1 where the cluster has GPUs
    cpus_per_replica: float = 1.0
    refresh_seconds: float = 60.0  # how often replicas look for newly committed units


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The access token: the file's first line (the file is named on the command line, the
    token never is)."""
    try:
        token = Path(path).read_text().splitlines()[0].strip() if Path(path).stat().st_size else ""
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise InvalidParameterError(f"--token-file {path}: cannot read it ({type(exc).__name__})") from None
    if len(token) < 16:
        raise InvalidParameterError(f"--token-file {path}: the token must be at least 16 characters")
    return token


def resolve_token(options: ServeOptions) -> str | None:
    token = read_token(options.token_file) if options.token_file else None
    if token is None and not is_loopback(options.host):
        raise InvalidParameterError(f"--host {options.host} is reachable from other machines: an access token "
                                    "is required there (--token-file FILE)")
    return token


class DicomwebReplica:
    """A Serve replica: the service over the archive, built once (index, codec, compiled decoders)."""

    def __init__(self, archive: str, token: str | None, refresh_seconds: float):
        import torch

        from .service import DicomwebService

        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.service = DicomwebService(archive, token, device, refresh_seconds)

    async def __call__(self, request):
        from starlette.responses import Response

        path = request.url.path
        root = request.scope.get("root_path", "") or ROUTE
        path = path.removeprefix(root) if path.startswith(root) else path.removeprefix(ROUTE)
        headers = {k.lower(): v for k, v in request.headers.items()}
        params = list(request.query_params.multi_items())
        # decoding is CPU work: off the event loop, so a replica takes the next request meanwhile
        r = await asyncio.to_thread(self.service.handle, request.method, path or "/", params, headers)
        return Response(r.body, status_code=r.status, media_type=r.content_type, headers=r.headers)


def build_app(options: ServeOptions, token: str | None, cluster_gpus: float):
    from ray import serve

    gpus = options.gpus_per_replica if options.gpus_per_replica is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    scaling = ({"num_replicas": options.replicas} if options.replicas else
               {"autoscaling_config": {"min_replicas": 1, "max_replicas": options.max_replicas,
                                       "target_ongoing_requests": 2}})
    deployment = serve.deployment(
        DicomwebReplica, name="dicomweb", max_ongoing_requests=8,
        ray_actor_options={"num_cpus": options.cpus_per_replica, "num_gpus": gpus},
        logging_config={"enable_access_log": False, "log_level": "WARNING"}, **scaling)
    return deployment.bind(options.archive, token, options.refresh_seconds)


def start(options: ServeOptions):
    """Start (or update) the service; returns the base URL. Ray is joined or started first."""
    from ..pipeline.job import start_ray

    token = resolve_token(options)
    ray = start_ray(options.address)
    from ray import serve

    serve.start(http_options={"host": options.host, "port": options.port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})
    app = build_app(options, token, float(ray.cluster_resources().get("GPU", 0)))
    serve.run(app, name=APP_NAME, route_prefix=ROUTE,
              logging_config={"enable_access_log": False, "log_level": "WARNING"})
    return f"http://{options.host}:{options.port}{ROUTE}"


def stop() -> None:
    from ray import serve

    serve.delete(APP_NAME)
