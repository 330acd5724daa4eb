"""What must be redone after a Lambda SnapStart restore, in one registry.

With SnapStart, Lambda initializes the function once, when a version is published,
snapshots the process, and starts every new execution environment from that
snapshot, possibly hours later and many times over. Whatever init left in memory
is then shared and may be stale: open connections, AWS credentials (they expire),
secrets read at init (they may have been rotated since), a seeded random generator
(the same in every copy). AWS's guidance: recreate such things after a restore
(https://docs.aws.amazon.com/lambda/latest/dg/snapstart-uniqueness.html).

The streaming runtime calls `run_after_restore()` once `/runtime/restore/next`
returns (`handler.streaming.runtime`); a hook that raises is reported to
`/runtime/restore/error` and the environment is not used. Hooks registered here by
default drop the process's cached AWS clients, so the next use creates them afresh
with the credentials of the restored environment:

- the botocore session the clients share (`core.aws`: its credentials are the snapshot's);
- the DynamoDB client (`core.store.client.get_dynamodb_client`, an `lru_cache`);
- the Secrets Manager client (`core.secrets.get_secrets_client`) that reads the API
  keys and the upstream's key;
- the `random` module's state, reseeded from the OS.

Other objects register their own hook (`after_restore(obj.method)`; a bound method
is held weakly, so registering does not keep its object alive): the API keyring
forgets the keys it read (`handler.keyring.KeyRing.forget`).

Nothing AWS-related is imported here: the hooks import only what is already loaded.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("threadline.runtime")

Hook = Callable[[], None]

_hooks: list[Callable[[], Hook | None]] = []
"""Each entry gives the hook, or None once a weakly held method's object is gone."""


def after_restore(hook: Hook) -> Hook:
    """Run `hook` after every restore from a snapshot, in registration order."""
    if hasattr(hook, "__self__") and hasattr(hook, "__func__"):
        method: weakref.WeakMethod[Hook] = weakref.WeakMethod(hook)  # type: ignore[arg-type]
        _hooks.append(method)
    else:
        _hooks.append(lambda: hook)
    return hook


def run_after_restore() -> int:
    """Run every hook; the number run. The first that raises stops the others and propagates."""
    ran = 0
    for entry in list(_hooks):
        hook = entry()
        if hook is None:
            _hooks.remove(entry)
            continue
        hook()
        ran += 1
    return ran


@after_restore
def _forget_the_dynamodb_client() -> None:
    module = sys.modules.get("core.store.client")
    if module is not None:
        module.get_dynamodb_client.cache_clear()


@after_restore
def _forget_the_botocore_session() -> None:
    """Its credentials are the snapshot's; the restored environment has its own."""
    module = sys.modules.get("core.aws")
    if module is not None:
        module.botocore_session.cache_clear()


@after_restore
def _forget_the_secrets_client() -> None:
    module = sys.modules.get("core.secrets")
    if module is not None:
        module.get_secrets_client.cache_clear()


@after_restore
def _reseed_random() -> None:
    module: Any = sys.modules.get("random")
    if module is not None:
        module.seed()
