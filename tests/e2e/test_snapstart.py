"""SnapStart through the streaming runtime: init, `/restore/next`, the after-restore
hooks, then invocations, driven by the fake Runtime API as Lambda drives them; and what
the hooks drop (the DynamoDB client, the keys read from Secrets Manager)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from handler.auth import KeyRing
from handler.lifecycle import run_after_restore
from tests.e2e.events import rest_event
from tests.e2e.fake_runtime_api import FakeRuntimeAPI
from tests.e2e.runtime_process import RuntimeProcess

SNAP_ENV = {
    "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


@pytest.fixture
def api() -> Iterator[FakeRuntimeAPI]:
    with FakeRuntimeAPI(snap_start=True) as fake:
        yield fake


def test_init_then_restore_then_invocations_with_fresh_clients(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(
        api.address, app="tests.e2e.snapstart_app:app", env=SNAP_ENV, log_path=tmp_path / "rt.log"
    ) as runtime:
        assert api.snapshot_taken.wait(30), runtime.log()  # init done, waiting to be snapshotted
        time.sleep(0.3)
        assert api.next_calls == 0  # no event is asked for before the restore
        api.restore()
        invocation = api.wait(api.queue(rest_event("GET", "/")), timeout=30)
        assert invocation.response is not None, runtime.log()
        seen = json.loads(invocation.response.split()[1])
        # The client made at init was dropped by the hook; the app got a new one.
        assert seen["client_id"] != seen["init_client_id"]
        assert seen["misses"] == 1  # created once since the restore (the hook reset the cache)
        assert api.restored_at is not None and api.first_next_at is not None
        assert api.first_next_at >= api.restored_at
        assert api.restore_errors == []
        # Later invocations keep the client made after the restore.
        again = json.loads(api.wait(api.queue(rest_event("GET", "/"))).response.split()[1])  # type: ignore[union-attr]
        assert (again["client_id"], again["misses"]) == (seen["client_id"], 1)
        assert "Restored from the snapshot" in runtime.log()


def test_a_failing_restore_hook_is_reported_to_restore_error(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    env = {**SNAP_ENV, "FAIL_AFTER_RESTORE": "1"}
    with RuntimeProcess(
        api.address, app="tests.e2e.snapstart_app:app", env=env, log_path=tmp_path / "rt.log"
    ) as runtime:
        assert api.snapshot_taken.wait(30), runtime.log()
        api.restore()
        assert runtime.wait(timeout=30) == 1
        (error,) = api.restore_errors
        assert error.error_type_header == "Runtime.AfterRestoreError"
        assert error.body["errorType"] == "RuntimeError"
        assert "could not be rebuilt" in error.body["errorMessage"]
        assert api.next_calls == 0 and api.init_errors == []


def test_without_snapstart_the_runtime_never_calls_restore(tmp_path: Path) -> None:
    with (
        FakeRuntimeAPI() as api,
        RuntimeProcess(api.address, app="tests.e2e.apps:scope_echo", log_path=tmp_path / "rt.log"),
    ):
        assert api.wait(api.queue(rest_event("GET", "/"))).response is not None
        assert not api.snapshot_taken.is_set()


async def test_after_a_restore_the_keyring_reads_the_secret_again() -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3

        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        arn = secrets.create_secret(Name="threadline-keys", SecretString="before-snapshot")["ARN"]
        ring = KeyRing(
            Settings(api_keys_secret_arn=arn, api_keys_max_age_seconds=3600, api_keys_max_stale_seconds=3600)
        )
        assert (await ring.table()).principal_for("before-snapshot") is not None
        secrets.put_secret_value(SecretId=arn, SecretString="rotated-since")
        assert (await ring.table()).principal_for("rotated-since") is None  # cached for an hour
        run_after_restore()
        table = await ring.table()
        assert table.principal_for("rotated-since") is not None
        assert table.principal_for("before-snapshot") is None
