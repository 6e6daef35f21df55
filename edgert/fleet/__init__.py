"""The fleet: gateways managed from NATS, with no server of their own.

`service.py`: each gateway a NATS micro service (`$SRV.PING|INFO|STATS`,
`svc.status`, `svc.reload`); `local.py` asks the gateway's own supervisor over
its control socket; `summary.py` turns a status snapshot into the figures
`edgert fleet ls` shows. With `[fleet] enabled = true`: `actor.py` is the fleet
actor (the service, and the desired config from KV: validate, apply, watch its
health, roll back, report), `kv.py` the buckets it and `edgert fleet push`
share, and `store.py` the desired config kept in the data directory, which the
runtime overlays on the local file.

Nothing is imported here: the runtime reads `store.py` without loading asyncio.
"""
