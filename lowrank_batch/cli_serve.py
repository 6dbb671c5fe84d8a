"""`lowrank-batch serve ARCHIVE`: the archive as a read-only DICOMweb service on Ray Serve."""

from __future__ import annotations

import argparse
import signal
import time


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.app import ServeOptions, start, stop

    options = ServeOptions(args.archive, args.host, args.port, args.token_file, args.address, args.replicas,
                           args.max_replicas, args.gpus_per_replica, args.cpus_per_replica)
    url = start(options)
    print(f"serving {args.archive} as DICOMweb at {url}" + (" (access token required)" if args.token_file else ""),
          flush=True)

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()
        print("stopped", flush=True)
    return 0


def serve_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve an archive as read-only DICOMweb (QIDO-RS, WADO-RS) on Ray Serve")
    p.add_argument("archive")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback; any other "
                   "needs --token-file)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token-file", default=None, help="file whose first line is the access token every request "
                   "must carry (Authorization: Bearer TOKEN)")
    p.add_argument("--address", default=None, help="Ray cluster to run on (default: a local Ray)")
    p.add_argument("--replicas", type=int, default=None, help="a fixed number of replicas (default: 1 to "
                   "--max-replicas, with load)")
    p.add_argument("--max-replicas", type=int, default=2)
    p.add_argument("--gpus-per-replica", type=float, default=None, help="default 1 where the cluster has GPUs")
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.set_defaults(func=cmd_serve)
