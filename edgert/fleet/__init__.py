"""The fleet: each gateway a NATS micro service, found and asked from anywhere on NATS.

`FleetService` (service.py) answers the standard micro protocol
(`$SRV.PING|INFO|STATS`) and the gateway's `svc.status` / `svc.reload`
endpoints; `local.py` asks the gateway's own supervisor over its control
socket; `summary.py` turns a status snapshot into the figures `edgert fleet ls`
shows.
"""

from .service import SERVICE_NAME, FleetService
from .summary import summary

__all__ = ["FleetService", "SERVICE_NAME", "summary"]
