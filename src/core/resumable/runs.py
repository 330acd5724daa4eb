"""Start a run: pump its events into a recorder in a task of its own, so the answer
goes on when the client that asked for it leaves.

The face keeps the process alive until the run ends: under uvicorn the task simply
runs on; the Lambda streaming runtime waits for it (`core.after_response`) before it
asks for the next invocation, within the function's timeout (15 minutes at most).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from core import after_response
from core.resumable.recorder import Recorder
from core.store.base import StoreUnavailable

logger = logging.getLogger("threadline.resumable")

Ending = tuple[str, dict[str, Any]] | None
"""How a run that reached its end is marked: (status, state attributes to set), or
None when its last write (a commit) already did."""

_running: set[asyncio.Task[None]] = set()


@dataclass
class Run:
    recorder: Recorder
    task: asyncio.Task[None]

    async def wait(self) -> None:
        """Until the run has ended, however it ended (a run stopped by a cancel is not
        this waiter's cancellation: that one still propagates)."""
        try:
            await asyncio.shield(self.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self.task.cancelled() or (current is not None and current.cancelling()):
                raise


def start(
    source: AsyncIterator[dict[str, Any]],
    recorder: Recorder,
    *,
    seq_of: Callable[[dict[str, Any]], int],
    ending: Callable[[dict[str, Any] | None], Ending],
    keep_alive: bool = True,
) -> Run:
    """Run `source` to its end, recording each event. With `keep_alive`, the face that
    serves the current request waits for the run after its response."""
    task = asyncio.get_running_loop().create_task(_pump(source, recorder, seq_of, ending))
    _running.add(task)
    task.add_done_callback(_running.discard)

    def stop() -> None:
        # From the run's own task (its commit or last write was refused) it simply
        # returns; from elsewhere (the flusher) it is cancelled, which closes the model call.
        if asyncio.current_task() is not task:
            task.cancel()

    recorder.on_revoked = stop
    run = Run(recorder=recorder, task=task)
    if keep_alive:
        after_response.defer(run.wait)
    return run


async def _pump(
    source: AsyncIterator[dict[str, Any]],
    recorder: Recorder,
    seq_of: Callable[[dict[str, Any]], int],
    ending: Callable[[dict[str, Any] | None], Ending],
) -> None:
    flusher = asyncio.create_task(recorder.run_flusher())
    last: dict[str, Any] | None = None
    try:
        async for event in source:
            recorder.add(seq_of(event), event)
            last = event
        recorder.reached_end = not recorder.revoked
        end = ending(last)
        if end is not None:
            status, attrs = end
            await _final_flush(recorder, status, attrs)
    except asyncio.CancelledError:
        if not recorder.revoked:
            raise
    except Exception:
        logger.exception("run failed", extra={"log": recorder.key.pk})
    finally:
        flusher.cancel()
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                logger.exception("closing a run's source failed")
        recorder.close()


async def _final_flush(recorder: Recorder, status: str, attrs: dict[str, Any]) -> None:
    """The last batch and the run's end: retried, since a run left `in_progress` would
    only be ended by its lease lapsing."""
    for attempt in range(5):
        try:
            await recorder.flush(status=status, attrs=attrs, cancellable=False)
            return
        except StoreUnavailable:
            await asyncio.sleep(0.2 * 2**attempt)
    logger.error("could not record the end of a run", extra={"log": recorder.key.pk})
