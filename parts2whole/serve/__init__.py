"""Serving on many devices and machines (imports core and studio only).

Modules, one job each: `devices` (which devices: --devices, P2W_DEVICES), `affinity` (the part set key and
the router that sends a request to the worker holding its encoding), `surface` (the Studio calling surface
a pool or a handle shares, forwarding by method name), `worker` (one device's process), `pool` (the local
pool of device workers), `ray_client` (the front end's side of the Ray Serve deployment, Ray imported only
when used), `ray_deployment` (the deployment itself, written as the Ray Serve docs do), `options` (the
app's serving options: engine, devices, Ray address, replicas).
"""

from __future__ import annotations

from .affinity import MAX_PART_SETS_PER_WORKER, AffinityRouter, part_set_key  # noqa: F401
from .devices import DEVICES_ENV, parse_devices  # noqa: F401
from .pool import DevicePool, WorkerLost  # noqa: F401
from .surface import FORWARDED_METHODS, RETRY_NOTE, RemoteStudio, ServiceUnavailable  # noqa: F401
