"""`lowrank-batch` commands on weights: the store (weights, adapters) and training."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import InvalidParameterError


def _print_entries(entries, with_base: bool, shipped: list[str] = ()) -> None:
    for line in shipped:
        print(line)
    if not entries:
        print("(none installed)")
        return
    head = f"{'name':20} {'ver':>3} {'sha256':64} {'bytes':>9} {'architecture':16} {'installed at':25}"
    print(head + (" base" if with_base else ""))
    for e in entries:
        line = f"{e.name:20} {e.version:>3} {e.sha256} {e.size:>9} {e.architecture:16} {e.installed_at:25}"
        print(line + (f" {e.base_name} ({e.base_sha256[:12]})" if with_base else ""))


def cmd_store(args: argparse.Namespace) -> int:
    """weights/adapters install|list|verify|remove."""
    from .weights.install import install_adapter, install_model
    from .weights.store import WeightStore

    store, kind = WeightStore(), args.kind
    if args.action == "install" and kind == "models":
        entry = install_model(store, args.src, args.name, args.sha256)
        print(f"installed model {entry.ref} sha256 {entry.sha256} ({entry.size} bytes) into {store.root}")
    elif args.action == "install":
        entry = install_adapter(store, args.src, args.base, args.name, args.sha256)
        print(f"installed adapter {entry.ref} sha256 {entry.sha256} ({entry.architecture}), "
              f"bound to model {entry.base_name} ({entry.base_sha256})")
    elif args.action == "list":
        entries = store.entries(kind)
        _print_entries(entries, with_base=kind == "adapters", shipped=_shipped_lines(kind, entries))
    elif args.action == "verify":
        results = store.verify(kind, args.name)
        for entry, problem in results:
            print(f"{entry.ref:24} {entry.sha256[:16]}  {'ok' if problem is None else 'FAILED: ' + problem}")
        bad = sum(problem is not None for _, problem in results)
        print(f"{len(results) - bad} ok, {bad} failed")
        return 1 if bad else 0
    elif args.action == "remove":
        for e in store.remove(kind, args.name):
            print(f"removed {kind[:-1]} {e.ref} ({e.sha256})")
    if args.action == "install" and not args.sha256:
        print(f"pin it with: --sha256 {entry.source_sha256}")
    return 0


def _shipped_lines(kind: str, entries) -> list[str]:
    """The weights that ship with the package and are not installed yet: `--adapter auto` and the
    default model use them (installed on first use), so a listing must not say there are none."""
    from .weights.defaults import DEFAULT_ADAPTER_SHA256, DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256

    installed = {e.sha256 for e in entries}
    shipped = ({DEFAULT_MODEL_NAME: DEFAULT_MODEL_SHA256} if kind == "models" else
               dict(sorted(DEFAULT_ADAPTER_SHA256.items())))
    base = f" for model {DEFAULT_MODEL_NAME}" if kind == "adapters" else ""
    return [f"{name:20} shipped {sha256}  (with the package{base}; installed on first use)"
            for name, sha256 in shipped.items() if sha256 not in installed]


def _store_commands(sub, command: str, kind: str) -> None:
    p = sub.add_parser(command, help=f"install, list, verify and remove {kind} in the weight store ($LOWRANK_HOME)")
    actions = p.add_subparsers(dest="action", required=True)
    install = actions.add_parser("install", help="SRC: a local path or an fsspec URL (s3://, gs://, file://, ...)")
    install.add_argument("src")
    install.add_argument("--name", default=None)
    install.add_argument("--sha256", default=None, help="expected digest: checked before anything is visible")
    if kind == "adapters":
        install.add_argument("--base", required=True, help="the installed model this adapter was made for")
    actions.add_parser("list", help=f"installed {kind}, and those shipped with the package")
    verify = actions.add_parser("verify", help="re-hash the blobs")
    verify.add_argument("name", nargs="?")
    remove = actions.add_parser("remove")
    remove.add_argument("name")
    p.set_defaults(func=cmd_store, kind=kind)



def cmd_train(args: argparse.Namespace) -> int:
    from .training.run import TrainConfig, replace, run, summary
    from .weights.defaults import default_adapter_file, default_model_file

    config = TrainConfig()
    for name in ("steps", "batch", "crop", "lr", "seed", "lora_rank", "loss"):
        if getattr(args, name) is not None:
            config = replace(config, **{name: getattr(args, name)})
    if args.kind == "base":
        out = args.out or str(default_model_file())
        report = run("base", args.corpus, out, config, address=args.address, device=args.device)
    else:
        if not args.modality:
            raise InvalidParameterError("train adapter needs --modality (ct, mr, xray or natural)")
        out = args.out or str(default_adapter_file(args.modality))
        base = args.base or str(default_model_file())
        config = config if args.steps is not None else replace(config, steps=1200)
        # adapters correct the base on one modality at the set level: big errors weigh as in an archive
        config = config if args.loss is not None else replace(config, loss="pooled")
        report = run("adapter", args.corpus, out, config, args.modality, base, args.address, args.device)
    print(summary(report))
    shipped = (default_model_file(), *(default_adapter_file(m) for m in ("ct", "mr", "xray", "natural")))
    if Path(out).resolve() in shipped:
        name = "DEFAULT_MODEL_SHA256" if args.kind == "base" else f"DEFAULT_ADAPTER_SHA256[{args.modality!r}]"
        print(f"the shipped file changed: pin {name} = {report['sha256']!r} in lowrank_batch/weights/defaults.py"
              + (" (and retrain the adapters: they are bound to the base)" if args.kind == "base" else ""))
    return 0


def _train_commands(sub) -> None:
    train = sub.add_parser("train", help="train the base codec or a per-modality LoRA adapter")
    train.add_argument("kind", choices=["base", "adapter"])
    train.add_argument("--modality", choices=["ct", "mr", "xray", "natural"], default=None)
    train.add_argument("--corpus", default="corpus", help="corpus folder (built from installed packages if missing)")
    train.add_argument("--base", default=None, help="adapter: the base model file (default: the shipped one)")
    train.add_argument("--out", default=None, help="weight file to write (default: the shipped file)")
    train.add_argument("--steps", type=int, default=None, help="optimiser steps (base 4000, adapter 1200)")
    train.add_argument("--batch", type=int, default=None)
    train.add_argument("--crop", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--lora-rank", dest="lora_rank", type=int, default=None)
    train.add_argument("--loss", choices=["per-pair", "pooled"], default=None,
                       help="per-pair: mean per-crop dB gain (base default); pooled: the set's gain per "
                            "quality (adapter default)")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    train.add_argument("--address", default=None, help="run on this Ray cluster as one task (GPU if any)")
    train.set_defaults(func=cmd_train)




def weights_commands(sub) -> None:
    _store_commands(sub, "weights", "models")
    _store_commands(sub, "adapters", "adapters")
    _train_commands(sub)
