"""The app's serving options (engine, devices, Ray address, replicas) and the studio they build: one
in-process studio, a pool of device workers, or a Ray Serve deployment behind a handle."""

from __future__ import annotations

import argparse
import logging
import os

from ..core.errors import Parts2WholeInputError
from ..studio import Studio, get_studio, on_zero_gpu
from .devices import DEVICES_ENV, parse_devices
from .pool import DevicePool
from .surface import RemoteStudio

logger = logging.getLogger("parts2whole.serve")

ENGINE_ENV = "P2W_ENGINE"
ENGINES = ("local", "ray")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("several devices or machines (docs/serving.md)")
    group.add_argument("--devices", default=None,
                       help=f"all, or a list such as cuda:0,cuda:2 (default: {DEVICES_ENV}): one worker process "
                            "per device, generations run side by side; wins over --device")
    group.add_argument("--engine", choices=ENGINES, default=os.environ.get(ENGINE_ENV) or "local",
                       help=f"local (this machine) or ray (a Ray Serve deployment; default: {ENGINE_ENV} or local)")
    group.add_argument("--ray-address", default=None,
                       help="with --engine ray: join this Ray cluster (auto, or HOST:6379); default: start Ray here")
    group.add_argument("--min-replicas", type=int, default=None,
                       help="with --engine ray: fewest replicas (autoscaling; default: one per GPU of the cluster, one without GPUs)")
    group.add_argument("--max-replicas", type=int, default=None,
                       help="with --engine ray: most replicas (each takes one GPU)")


def build_studio(args: argparse.Namespace) -> Studio | RemoteStudio:
    """The studio the app serves with, from the parsed options (Parts2WholeInputError when they clash)."""
    if args.engine == "ray":
        if on_zero_gpu():
            raise Parts2WholeInputError("--engine ray cannot run on ZeroGPU Spaces (a GPU is attached per call).")
        if args.devices:
            raise Parts2WholeInputError("--devices is for one machine; with --engine ray, Ray Serve runs one replica "
                                        "per GPU (set --min-replicas/--max-replicas instead).")
        for name in ("min_replicas", "max_replicas"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise Parts2WholeInputError(f"--{name.replace('_', '-')} must be at least 1.")
        from .ray_client import RayStudio  # Ray is optional: imported only with --engine ray

        return RayStudio(args.weights, address=args.ray_address, device=args.device, dtype=args.dtype,
                         min_replicas=args.min_replicas, max_replicas=args.max_replicas)
    if args.ray_address or args.min_replicas or args.max_replicas:
        raise Parts2WholeInputError("--ray-address, --min-replicas and --max-replicas need --engine ray.")
    devices = parse_devices(args.devices)
    if devices is None:
        return get_studio(args.weights, device=args.device, dtype=args.dtype)
    if args.device:
        logger.warning("--devices %s wins over --device %s.", ",".join(devices), args.device)
    pool = DevicePool(devices, args.weights, dtype=args.dtype)
    print(f"Loading the model on {len(devices)} devices ({', '.join(devices)})...", flush=True)
    ready = pool.wait_ready()
    if not ready:
        pool.close()
        raise Parts2WholeInputError("No device worker could load the model; see the lines above.")
    return pool
