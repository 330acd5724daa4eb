"""Keys from Secrets Manager, as deployed: read over HTTP from a local Secrets Manager
endpoint (moto's backend behind a real server), in a fresh process, with a botocore
client and without importing boto3 or Powertools' parameters utility, which cost a
cold start 100 to 400 ms here for nothing the service needs (see `core.secrets`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.events import rest_event
from tests.fakes.secretsmanager_server import SecretsManagerServer

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import json, sys
from handler.lambda_buffered import handler
from bench.coldstart_child import Context
answers = [handler(json.loads(line), Context()) for line in sys.stdin]
print(json.dumps({
    "statuses": [answer["statusCode"] for answer in answers],
    "boto3": "boto3" in sys.modules,
    "parameters": "aws_lambda_powertools.utilities.parameters" in sys.modules,
}))
"""


def test_keys_come_from_the_secret_without_boto3_or_powertools_parameters(tmp_path: Path) -> None:
    with SecretsManagerServer() as secrets:
        arn = secrets.create("threadline/api-keys", "first-key, second-key")
        env = {key: value for key, value in os.environ.items() if not key.startswith(("API_KEYS", "AWS_ENDPOINT"))}
        env.update(
            {
                "API_KEYS_SECRET_ARN": arn,
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": secrets.endpoint,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_LAMBDA_FUNCTION_NAME": "threadline-test",
                "MODEL_PROVIDER": "echo",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            }
        )
        events = [
            rest_event("GET", "/v1/models", headers={"Authorization": "Bearer second-key"}),
            rest_event("GET", "/v1/models", headers={"Authorization": "Bearer not-a-key"}),
        ]
        result = subprocess.run(
            [sys.executable, "-c", CHILD],
            input="".join(json.dumps(event) + "\n" for event in events),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["statuses"] == [200, 401], result.stderr[-2000:]
    assert seen == {"statuses": [200, 401], "boto3": False, "parameters": False}
