"""Imported last by the fork server, after every preloaded module.

`gc.freeze()` moves everything imported so far into the collector's permanent
generation, so a collection in an actor process never writes to (and so never
copies) the pages it shares with the fork server. This keeps each actor's
private memory (USS) to what the actor itself allocates.
"""

import gc

gc.collect()
gc.freeze()
