"""The encode job: list SRC, cut units, run EncodeWorker actors on Ray, summarise the run.

The driver holds only the listing and per-unit statistics; pixels live in the actors, which
write and commit their own units. Without --address a local Ray is started in-process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
import uuid
from dataclasses import asdict, dataclass

import fsspec

from .. import __version__
from ..archive import layout
from ..archive.records import FailureRecord, RunSummary, check_positive
from ..codec.codec import Codec, CodecConfig
from ..archive.checkpoint import checkpoint
from ..archive.reader import parse_record
from ..errors import LowrankError
from ..ray_session import start_ray
from ..storage import Retrier, RetryPolicy, describe, is_storage_error, retrying
from .archive_weights import ArchiveWeights, resolve_weights, ship_weights
from .reading import read_unit
from .resources import (DEFAULT_WAIT_SECONDS, ResourceWaitError, autoscaler_present, release_request,
                        request_and_wait)
from .units import list_sources, make_units
from .worker import EncodeSettings, EncodeWorker, UnitResult


class JobError(LowrankError):
    """The job itself cannot run (cluster, resources, destination)."""


MAX_RETRIES = 2  # restarts of a dead worker, and retries of the unit it was running
MAX_UNIT_ATTEMPTS = 3  # workers a unit is given when the one running it is lost (node loss, OOM kill)


@dataclass(frozen=True)
class JobOptions:
    address: str | None = None  # None: local Ray in-process; "auto" or "ray://host:port": join a cluster
    workers: int | None = None  # default: one per GPU, else one per CPU
    gpus_per_worker: float | None = None  # default 1 where GPUs exist, else 0
    batch_size: int = 16  # files per unit
    prune: bool = False  # remove archived images whose source is gone
    orphan_age_seconds: float = 3600.0  # uncommitted data files older than this are leftovers of a crash
    storage_retry_seconds: float = 300.0  # how long an unreachable or failing store is waited for
    # autoscaling clusters: ask for the workers and wait up to this long for them; None: 900 s
    # where an autoscaler is detected, else 0 (size from what is up, fail fast)
    resource_wait_seconds: float | None = None

    def __post_init__(self) -> None:
        """Checked here, before Ray starts: a bad option is one clear error, not a stuck job."""
        check_positive("--workers", self.workers, 1, integer=True)
        check_positive("--gpus-per-worker", self.gpus_per_worker, 0)
        check_positive("--batch-size", self.batch_size, 1, allow_none=False, integer=True)
        check_positive("--storage-retry-seconds", self.storage_retry_seconds, 0, allow_none=False)
        check_positive("orphan_age_seconds", self.orphan_age_seconds, 0, allow_none=False)
        check_positive("--wait-for-resources", self.resource_wait_seconds, 0)
        if self.address is not None and not isinstance(self.address, str):
            raise JobError(f"--address must be a Ray address string, got {self.address!r}")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(seconds=self.storage_retry_seconds)


def plan_workers(resources: dict, options: JobOptions) -> tuple[int, float, float]:
    """(workers, gpus per worker, cpus per worker) for the cluster's resources; fails fast
    when GPUs are asked for and the cluster has too few (Ray would wait forever).

    Each worker takes one CPU too: the residual coder runs there. With GPUs, image decoding
    runs in separate CPU tasks on the CPUs the workers leave free (so the CPU:GPU ratio is
    one CPU per worker plus the node's spare CPUs for decoding, a window of 2 units ahead per
    worker); without, in the worker itself. Workers are capped by both resources, so no actor
    is left pending with work queued on it."""
    gpus = float(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    per_gpu = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per_gpu < 0:
        raise JobError(f"--gpus-per-worker must be >= 0, got {per_gpu}")
    if per_gpu > 0:
        if gpus < per_gpu:
            raise JobError(f"asked for {per_gpu} GPU per worker but the cluster has {gpus:g} GPUs; "
                           "use --gpus-per-worker 0 to run on CPUs (on an autoscaling cluster, "
                           "--wait-for-resources SECONDS asks the autoscaler for them)")
        workers = options.workers or int(min(gpus // per_gpu, cpus))
        if workers * per_gpu > gpus + 1e-9:
            raise JobError(f"{workers} workers x {per_gpu} GPU need {workers * per_gpu:g} GPUs; "
                           f"the cluster has {gpus:g}")
    else:
        workers = options.workers or int(cpus)
    if workers > cpus:
        raise JobError(f"{workers} workers need {workers} CPUs; the cluster has {cpus:g}")
    return max(1, workers), per_gpu, 1.0


def _try_storage(call, retry: RetryPolicy):
    """(result, None), or (None, what went wrong) when a storage error outlasts the retries."""
    try:
        return retrying(call, retry), None
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        return None, f"{type(exc).__name__}: {describe(exc)}"


def _storage_step(what: str, call, retry: RetryPolicy):
    """A step the job cannot go on without (listing SRC, opening DST): else one clear JobError."""
    result, error = _try_storage(call, retry)
    if error:
        raise JobError(f"cannot {what}: {error}")
    return result


def run_encode(src: str, dst: str, settings: EncodeSettings, options: JobOptions, log=print) -> RunSummary:
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    start = time.perf_counter()
    retry = options.retry
    files = _storage_step(f"list {src}", lambda: list_sources(src), retry)
    archive = _storage_step(f"open the archive {dst}", lambda: layout.open_existing(dst), retry)
    plan = layout.plan_sources(archive, files)
    todo = [f for f in files if f.rel not in plan.done]
    units = make_units(todo, options.batch_size)
    log(f"run {run_id}: {len(files)} files under {src}, {len(plan.done)} already archived, {len(plan.gone)} gone, "
        f"{len(units)} units to encode")
    summary = RunSummary(run_id, src, dst, asdict(settings), _codec_record(), asdict(options),
                         skipped=len(plan.done), gone=len(plan.gone), gone_ids=plan.gone[:1000])
    removed, error = _try_storage(lambda: layout.remove_orphans(archive, options.orphan_age_seconds), retry)
    summary.orphans_removed = removed or 0
    if error:  # housekeeping: leftovers of a crash can wait for the next run
        summary.notes.append(f"uncommitted leftovers in {dst} were not cleaned up this run ({error})")
    if plan.gone and options.prune:
        fs, root = fsspec.core.url_to_fs(dst)
        _storage_step(f"prune {dst}", lambda: layout.write_tombstones(fs, root, run_id, plan.gone), retry)
        summary.pruned = len(plan.gone)
    if units:
        _encode_units(units, dst, run_id, settings, options, summary, log, start)
    summary.notes += _write_failure_note(summary.failures, dst)
    # fold tonight's commits into a checkpoint, so opening the archive reads a bounded number of records
    fs, root = fsspec.core.url_to_fs(dst)
    written, error = _try_storage(lambda: checkpoint(fs, root.rstrip("/"), parse_record), retry)
    summary.checkpoint = written
    if error:  # housekeeping: the next run (or compact) writes it
        summary.notes.append(f"no checkpoint was written this run ({error})")
    summary.finish(time.perf_counter() - start)
    # the images are committed by now: a run record that cannot be written is said, not raised
    _, error = _try_storage(lambda: layout.write_run_record(dst, summary), retry)
    if error:
        summary.run_record_error = (f"could not write the run record "
                                    f"{layout.run_record_path(dst, run_id)}: {error}")
    return summary


def _codec_record(codec: Codec | None = None) -> dict:
    """What the run's codec was: its config in full, the package version, and (once loaded) the model."""
    record = {"config": asdict(codec.config if codec else CodecConfig()), "codec_version": __version__}
    if codec is not None:
        record["model_sha256"] = codec.model.sha256
        record["adapter_sha256"] = codec.adapter_sha256
    return record


def _encode_units(units, dst: str, run_id: str, settings: EncodeSettings, options: JobOptions,
                  summary: RunSummary, log, start: float) -> None:
    """Run the units on Ray's encode workers, adding each unit's result to the summary."""
    # names -> digests once, here; the weights go into the archive before any unit commits, and
    # every worker loads them from there by digest (a node's own store may lack or differ)
    weights, files = resolve_weights(settings.model, settings.adapter, settings.adapter_rules)
    fs, root = fsspec.core.url_to_fs(dst)
    summary.weights = {"model_sha256": weights.model_sha256, "adapter_sha256": weights.adapter_sha256,
                       **_storage_step(f"copy the weights into {dst}", lambda: ship_weights(fs, root, files),
                                       options.retry)}
    # loaded here from the archive's copy first: a bad file is one clear error now, not every
    # worker dying in the cluster with the reason in its logs
    summary.codec = _codec_record(ArchiveWeights(fs, root).codec(weights.model_sha256, weights.adapter_sha256))
    ray = start_ray(options.address)
    resources, asked = _wait_for_workers(ray, options, len(units), log)
    try:
        _run_actors(ray, resources, units, dst, run_id, settings, weights, asked or options, summary, log, start)
    finally:
        if asked:  # the request is sticky: withdraw it, so idle nodes can go
            release_request()


def _run_actors(ray, resources, units, dst, run_id, settings, weights, options, summary, log, start) -> None:
    workers, gpus, cpus = plan_workers(resources, options)
    # a killed worker restarts and its unit is retried (bounded); then the unit is recorded failed
    actor = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RETRIES,
                       max_task_retries=MAX_RETRIES)(EncodeWorker)
    actors = [actor.remote(dst, run_id, settings, options.retry, weights) for _ in range(min(workers, len(units)))]
    read_ahead = None
    if gpus:  # GPU workers: read image files in CPU tasks on the CPUs the workers leave free
        spare = float(resources.get("CPU", 0)) - len(actors) * cpus
        reader = ray.remote(num_cpus=1 if spare >= 1 else 0)(read_unit)  # 0: no deadlock when full
        read_ahead = lambda unit: reader.remote(unit, Retrier(options.retry))  # noqa: E731
    progress = Progress(len(units), log)
    for result in _schedule(ray, actors, units, read_ahead):
        if summary.startup_seconds is None:  # actors started, weights loaded, kernels compiled
            summary.startup_seconds = time.perf_counter() - start
        summary.add_unit(result)
        progress.update(summary)


def _wait_for_workers(ray, options: JobOptions, units: int, log) -> tuple[dict, JobOptions | None]:
    """(the cluster's resources to size the job from, the options with the workers the
    autoscaler was asked for, or None when it was not): what is up now, or, with an
    autoscaler, what it was asked for and provided (bounded by a timeout with a clear message)."""
    resources = ray.cluster_resources()
    wait = options.resource_wait_seconds
    if wait is None:
        wait = DEFAULT_WAIT_SECONDS if autoscaler_present(ray) else 0.0
    if wait <= 0:
        return resources, None
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if resources.get("GPU") else 0.0)
    workers = min(options.workers or max(1, int(resources.get("GPU", 0) // gpus if gpus else 1)), units)
    try:
        return (request_and_wait(ray, workers, gpus, 1.0, wait, log),
                dataclasses.replace(options, workers=workers, gpus_per_worker=gpus))
    except ResourceWaitError as exc:
        raise JobError(str(exc)) from None


def _write_failure_note(failures: list[FailureRecord], dst: str) -> list[str]:
    """One line for images encoded but not written (a full disk, the store down too long)."""
    unwritten = [f for f in failures if f.stage == "write"]
    if not unwritten:
        return []
    return [f"{len(unwritten)} encoded images could not be written to {dst} ({unwritten[0].message}); "
            "nothing of their units was committed, and the next run encodes them again"]


def _schedule(ray, actors, units, read_ahead, prefetch_per_actor: int = 2):
    """Yield unit results as they finish: each idle actor takes the next unit; with read_ahead
    (unit -> ref of its decoded images), a bounded window of units is decoded ahead on CPUs so
    the GPU stage is not starved."""
    pending = list(reversed(units))
    ready: list = []  # (unit, decoded-ref or None), in order
    attempts: dict[str, int] = {}  # unit id -> tries that ended with its worker lost
    idle = list(actors)
    inflight: dict = {}

    def prefetch():
        while pending and len(ready) < prefetch_per_actor * len(actors):
            unit = pending.pop()
            ready.append((unit, read_ahead(unit) if read_ahead else None))

    prefetch()
    while ready or inflight:
        while idle and ready:
            unit, decoded = ready.pop(0)
            a = idle.pop()
            inflight[a.encode_unit.remote(unit, decoded)] = (a, unit)
            prefetch()
        done, _ = ray.wait(list(inflight), num_returns=1)
        a, unit = inflight.pop(done[0])
        try:
            result = ray.get(done[0])
            idle.append(a)  # it answered, so it is alive
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as exc:
            alive = _alive(ray, a)  # only a failure raises the question
            if alive:
                idle.append(a)
            attempts[unit.unit_id] = attempts.get(unit.unit_id, 0) + 1
            lost = not isinstance(exc, ray.exceptions.RayTaskError)  # its worker or node died, not the unit
            if lost and attempts[unit.unit_id] < MAX_UNIT_ATTEMPTS and (idle or inflight):
                # a node gone mid-run: the unit goes to another worker (its restarts may have
                # been spent while the node was being declared dead)
                ready.insert(0, (unit, read_ahead(unit) if read_ahead else None))
                continue
            # a bug raised, or the unit killed every worker it was given: its files are
            # failures on record, the job goes on
            result = UnitResult(unit.unit_id, failures=[
                FailureRecord.of(f.rel, f.uri, "worker", exc, _unit_failure(ray, exc, attempts[unit.unit_id]))
                for f in unit.files])
            result.failed = len(result.failures)
            if not idle and not inflight:
                raise JobError("every encode worker died; see the Ray logs")
        yield result


def _unit_failure(ray, exc: Exception, attempts: int) -> str:
    """Why a unit produced no result. Only the type of an exception the unit raised is kept:
    its text may quote a file's contents."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        return f"the unit's encode raised {type(cause).__name__ if cause else 'an error'}; see the worker's log"
    return f"its worker died on it {attempts} times ({MAX_RETRIES + 1} tries each)"


def _alive(ray, actor) -> bool:
    try:
        ray.get(actor.info.remote(), timeout=60)
        return True
    except Exception:  # dead for good (restarts exhausted) or unreachable
        return False


class Progress:
    """A live line on a terminal; a plain line at most every 10 s otherwise (job logs)."""

    def __init__(self, total_units: int, log, interval: float = 10.0):
        self.total, self.log, self.interval = total_units, log, interval
        self.units = 0
        self.start = self.last = time.perf_counter()
        self.tty = sys.stdout.isatty()

    def update(self, summary: RunSummary) -> None:
        self.units += 1
        now = time.perf_counter()
        elapsed = max(now - self.start, 1e-9)
        eta = elapsed / self.units * (self.total - self.units)
        line = (f"{self.units}/{self.total} units, {summary.encoded} images, {summary.failed} failed, "
                f"{summary.bytes_in / 1e6 / elapsed:.1f} MB/s, {summary.pixels / 1e6 / elapsed:.2f} MP/s, "
                f"ETA {eta:.0f} s")
        if self.tty:
            print("\r" + line, end="\n" if self.units == self.total else "", flush=True)
        elif now - self.last >= self.interval or self.units == self.total:
            self.log(line)
            self.last = now
