"""The local DynamoDB a dev tool runs against: DynamoDB Local, the environment, the table.

`with local_dynamodb() as db:` starts DynamoDB Local with its data under
`.data/dynamodb` (so sessions survive a restart) unless `AWS_ENDPOINT_URL_DYNAMODB`
is already set, in which case that endpoint is used and nothing is started. Either
way it sets the dummy AWS environment boto3 needs (without overriding what the
developer set), creates the sessions table where missing, and on exit, even after
an error or Ctrl-C, stops the DynamoDB Local it started and restores the environment.

Used by `devtools.serve` (`make run`) and `devtools.invoke` (`make invoke`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".data" / "dynamodb"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_DYNAMODB"

if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


@dataclass(frozen=True)
class LocalDynamoDB:
    endpoint: str
    """The DynamoDB endpoint every client of this process uses."""
    table: str
    """The sessions table, created where it was missing."""
    started: bool
    """Whether this process started DynamoDB Local (and so stops it on exit)."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _show(path: Path) -> str:
    try:
        return f"{path.relative_to(ROOT)}/"
    except ValueError:
        return f"{path}/"


def _reset_cached_clients() -> None:
    """Settings and the DynamoDB client are cached per process: drop what was read
    under another environment."""
    from core.settings import get_settings
    from core.store.client import get_dynamodb_client

    get_settings.cache_clear()
    get_dynamodb_client.cache_clear()


@contextmanager
def local_dynamodb(data_dir: Path | None = DATA_DIR, *, say: Callable[[str], None] = _say) -> Iterator[LocalDynamoDB]:
    """DynamoDB Local (unless `AWS_ENDPOINT_URL_DYNAMODB` is set) with the sessions table.

    `data_dir=None` keeps DynamoDB Local's data in memory. `say` reports what happens
    (by default on stderr, so stdout stays the tool's own output).
    """
    from devtools.dynamodb_local import DynamoDBLocal, dummy_aws_environment

    touched = (*dummy_aws_environment("").keys(), ENDPOINT_VARIABLE)
    saved = {name: os.environ.get(name) for name in touched}
    database: DynamoDBLocal | None = None
    try:
        existing = os.environ.get(ENDPOINT_VARIABLE)
        if existing:
            endpoint = existing
            say(f"Using DynamoDB at {endpoint}")
        else:
            database = DynamoDBLocal(data_dir=data_dir)
            database.start()  # assigned first, so a Ctrl-C during start-up still stops it
            endpoint = database.endpoint
            where = _show(data_dir) if data_dir is not None else "memory"
            say(f"DynamoDB Local on {endpoint}, data in {where}")
        for name, value in dummy_aws_environment(endpoint).items():
            os.environ.setdefault(name, value)
        os.environ[ENDPOINT_VARIABLE] = endpoint

        from core.settings import get_settings
        from core.store.client import get_dynamodb_client
        from core.store.dynamodb import ensure_table

        _reset_cached_clients()
        table = get_settings().sessions_table
        ensure_table(get_dynamodb_client(), table)
        yield LocalDynamoDB(endpoint=endpoint, table=table, started=database is not None)
    finally:
        if database is not None and database.process is not None:
            database.stop()
            say("DynamoDB Local stopped.")
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        _reset_cached_clients()
