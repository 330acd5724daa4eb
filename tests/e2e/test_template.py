"""template.yaml: it translates and lints clean, wires every contract route to the
streaming integration, grants nothing wider than needed, and matches the app.

The translated template comes from `deploy/validate_template.py` (what `make validate`
runs: cfn-lint on the SAM template, the SAM translator, cfn-lint on its output),
run with the deploy tools' own virtualenv, which `make deploy-tools` installs.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cfn import Resolver
from tests.e2e.events import rest_event
from tests.e2e.fake_runtime_api import FakeRuntimeAPI
from tests.e2e.runtime_process import RuntimeProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_PYTHON = ROOT / ".venv" / "deploy" / "bin" / "python"

# CONTRACT.md's endpoints, with ids filled in; plus a static asset of the chat page.
CONTRACT_ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/resp_0123456789abcdef"),
    ("DELETE", "/v1/responses/resp_0123456789abcdef"),
    ("GET", "/v1/models"),
    ("GET", "/v1/sessions"),
    ("GET", "/v1/sessions/sess-42/messages"),
    ("DELETE", "/v1/sessions/sess-42"),
    ("GET", "/health"),
    ("GET", "/v1/health"),
    ("GET", "/"),
    ("GET", "/static/style.css"),
]

SCENARIOS: dict[str, dict[str, str]] = {
    "bedrock model": {"ModelProvider": "bedrock", "ModelId": "amazon.nova-lite-v1:0"},
    "bedrock profile": {"ModelProvider": "bedrock", "ModelId": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"},
    "openai": {
        "ModelProvider": "openai",
        "ModelId": "gpt-4o-mini",
        "OpenAIBaseUrl": "https://api.openai.com/v1",
        "UpstreamApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:threadline/upstream-AbCdEf",
    },
    "echo": {"ModelProvider": "echo"},
    "echo with tracing": {"ModelProvider": "echo", "Tracing": "on"},
}


def run_validate(template: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(DEPLOY_PYTHON),
            str(ROOT / "deploy" / "validate_template.py"),
            "--template",
            str(template),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    # The same tools `make validate` uses, installed the same way (a no-op when present).
    subprocess.run(["make", "--no-print-directory", "-s", "deploy-tools"], cwd=ROOT, check=True, timeout=900)
    output = tmp_path_factory.mktemp("validate") / "template.json"
    result = run_validate(ROOT / "template.yaml", output)
    translated = json.loads(output.read_text()) if output.is_file() else {}
    return result, translated


@pytest.fixture(scope="module")
def cfn(validation: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> dict[str, Any]:
    result, translated = validation
    assert result.returncode == 0, result.stdout + result.stderr
    return translated


def resources_of(cfn: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in cfn["Resources"].items() if res["Type"] == kind}


def test_cfn_lint_passes_on_the_sam_template_and_its_translation(
    validation: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, translated = validation
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cfn-lint template.yaml (SAM schemas): ok" in result.stdout
    assert "cfn-lint translated template: ok" in result.stdout
    # Translated for real: no serverless resources are left.
    kinds = {res["Type"] for res in translated["Resources"].values()}
    assert not any(kind.startswith("AWS::Serverless::") for kind in kinds)
    assert {"AWS::Lambda::Function", "AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage"} <= kinds


def test_the_translator_catches_what_cfn_lint_alone_passes(tmp_path: Path, cfn: dict[str, Any]) -> None:
    broken = (ROOT / "template.yaml").read_text().replace("RestApiId: !Ref ThreadlineApi", "RestApiId: !Ref NoSuchApi")
    (tmp_path / "template.yaml").write_text(broken)
    result = run_validate(tmp_path / "template.yaml", tmp_path / "out.json")
    assert result.returncode != 0
    assert "(SAM schemas): ok" in result.stdout  # cfn-lint alone lets it through
    assert "RestApiId must be a valid reference" in result.stdout  # the translator does not


def _api_resource_for(paths: dict[str, Any], path: str) -> str | None:
    """The API resource API Gateway matches `path` to: an exact resource first, then a
    greedy `{proxy+}` whose prefix matches (the longest)."""
    if path in paths:
        return path
    candidates = []
    for resource in paths:
        if resource.endswith("/{proxy+}"):
            prefix = resource[: -len("{proxy+}")]
            if path.startswith(prefix) and len(path) > len(prefix):
                candidates.append(resource)
    return max(candidates, key=len) if candidates else None


def test_every_contract_route_is_wired_to_the_streaming_integration(cfn: dict[str, Any]) -> None:
    (api,) = resources_of(cfn, "AWS::ApiGateway::RestApi").values()
    paths = api["Properties"]["Body"]["paths"]
    permissions = [res["Properties"] for res in resources_of(cfn, "AWS::Lambda::Permission").values()]
    (stage,) = resources_of(cfn, "AWS::ApiGateway::Stage").values()
    stage_name = stage["Properties"]["StageName"]
    for method, path in CONTRACT_ROUTES:
        resource = _api_resource_for(paths, path)
        assert resource is not None, f"{method} {path} matches no API resource"
        operations = paths[resource]
        operation = operations.get(method.lower()) or operations.get("x-amazon-apigateway-any-method")
        assert operation is not None, f"{method} {path}: no {method} or ANY method on {resource}"
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        assert integration["httpMethod"] == "POST"
        assert integration["responseTransferMode"] == "STREAM"
        assert integration["timeoutInMillis"] == 900000
        uri = integration["uri"]["Fn::Sub"]
        # The alias AutoPublishAlias moves to each published version (SnapStart needs one).
        assert uri.endswith("/2021-11-15/functions/${ThreadlineFunctionAliaslive}/response-streaming-invocations")
        # API Gateway may invoke the function for this route: a permission's SourceArn matches.
        invoked = f"arn:aws:execute-api:us-east-1:123456789012:API/{stage_name}/{method}{path}"
        allowed = []
        for permission in permissions:
            assert permission["Action"] == "lambda:InvokeFunction"
            assert permission["FunctionName"] == {"Ref": "ThreadlineFunctionAliaslive"}
            pattern, names = permission["SourceArn"]["Fn::Sub"]
            assert names["__ApiId__"] == {"Ref": "ThreadlineApi"}
            arn = pattern.replace("${AWS::Region}", "us-east-1").replace("${AWS::AccountId}", "123456789012")
            arn = arn.replace("${__ApiId__}", "API").replace("${__Stage__}", names["__Stage__"])
            allowed.append(fnmatch.fnmatchcase(invoked, arn))
        assert any(allowed), f"no Lambda permission covers {method} {path}"


def test_every_contract_route_reaches_the_app_through_the_catch_all(tmp_path: Path) -> None:
    """The events API Gateway sends for the two catch-all resources arrive at the app
    with the contract's method and path (through the real runtime and Mangum's handler)."""
    with (
        FakeRuntimeAPI() as api,
        RuntimeProcess(api.address, app="tests.e2e.apps:scope_echo", log_path=tmp_path / "runtime.log"),
    ):
        for method, path in CONTRACT_ROUTES:
            event = rest_event(method, path, {"probe": True} if method == "POST" else None, query={"limit": "5"})
            invocation = api.wait(api.queue(event), timeout=30)
            assert invocation.response is not None, invocation.error
            seen = json.loads(invocation.response.split()[1])
            assert (seen["method"], seen["path"], seen["query_string"]) == (method, path, "limit=5")


def test_every_contract_route_exists_in_the_app(tmp_path: Path, local_table: tuple[Any, str]) -> None:
    """Through the streaming runtime, the real app knows every contract route: none is
    answered with the app's route-level 404 ("Invalid URL") or a 405."""
    key = "route-test-key"
    with (
        FakeRuntimeAPI() as api,
        RuntimeProcess(
            api.address, env={"API_KEYS": key, "MODEL_PROVIDER": "echo"}, log_path=tmp_path / "runtime.log"
        ) as runtime,
    ):
        for method, path in CONTRACT_ROUTES:
            body = None
            if method == "POST":
                body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "input": "hi"}
            event = rest_event(method, path, body, headers={"Authorization": f"Bearer {key}"})
            invocation = api.wait(api.queue(event), timeout=30)
            assert invocation.response is not None, (method, path, invocation.error, runtime.log())
            prelude, payload = invocation.response.split()
            status = prelude["statusCode"]
            assert status != 405, (method, path, payload)
            if status == 404:
                assert b"Invalid URL" not in payload, (method, path, payload)


def _function_policy(cfn: dict[str, Any], scenario: dict[str, str]) -> tuple[Resolver, list[dict[str, Any]]]:
    resolver = Resolver(cfn, scenario)
    role = resolver.resolve(cfn["Resources"]["FunctionRole"]["Properties"])
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    return resolver, statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_iam_statement_is_wider_than_it_must_be(cfn: dict[str, Any], scenario: str) -> None:
    resolver, statements = _function_policy(cfn, SCENARIOS[scenario])
    by_sid = {s["Sid"]: s for s in statements}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            assert "*" not in action, statement
        for resource in _as_list(statement["Resource"]):
            if statement["Sid"] == "XRayTraces":
                # X-Ray's trace actions have no resource-level permissions: "*" is their only ARN.
                assert resource == "*" and set(statement["Action"]) == {
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                }
                continue
            assert resource != "*", statement
            if isinstance(resource, str) and "*" in resource:
                # The one wildcard: the Regions a cross-Region inference profile routes to,
                # only for requests made through our profile.
                assert statement["Sid"] == "BedrockModelThroughTheProfile", statement
                assert re.fullmatch(r"arn:aws:bedrock:\*::foundation-model/[a-z0-9.:-]+", resource), resource
                assert "bedrock:InferenceProfileArn" in statement["Condition"]["StringEquals"]

    assert by_sid["Logs"]["Resource"] == {"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}
    assert set(by_sid["Logs"]["Action"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    table = by_sid["SessionsTable"]
    assert table["Resource"] == [
        {"Fn::GetAtt": ["SessionsTable", "Arn"]},
        {"Fn::Sub": "${SessionsTable.Arn}/index/gsi1"},
    ]
    assert set(table["Action"]) == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:ConditionCheckItem",
    }
    assert by_sid["ApiKeys"] == {
        "Sid": "ApiKeys",
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": {"Ref": "ApiKeysSecret"},
    }

    # The function may invoke itself, through its alias, and nothing else (background responses).
    name = resolver.resolve(cfn["Resources"]["ThreadlineFunction"]["Properties"])["FunctionName"]
    assert by_sid["SelfInvoke"] == {
        "Sid": "SelfInvoke",
        "Effect": "Allow",
        "Action": "lambda:InvokeFunction",
        "Resource": f"arn:aws:lambda:us-east-1:123456789012:function:{name}:live",
    }
    assert [s for s in statements if "lambda:" in str(s["Action"])] == [by_sid["SelfInvoke"]]

    bedrock = {sid for sid in by_sid if sid.startswith("Bedrock")}
    model_id = resolver.values["ModelId"]
    if scenario == "bedrock model":
        assert bedrock == {"BedrockModel"}
        assert by_sid["BedrockModel"]["Resource"] == f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}"
    elif scenario == "bedrock profile":
        profile = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{model_id}"
        assert bedrock == {"BedrockInferenceProfile", "BedrockModelThroughTheProfile"}
        assert by_sid["BedrockInferenceProfile"]["Resource"] == profile
        through = by_sid["BedrockModelThroughTheProfile"]
        assert through["Resource"] == "arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0"
        assert through["Condition"] == {"StringEquals": {"bedrock:InferenceProfileArn": profile}}
    else:
        assert bedrock == set()
    for sid in bedrock:
        assert set(by_sid[sid]["Action"]) == {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}

    assert ("XRayTraces" in by_sid) == (scenario == "echo with tracing")

    if scenario == "openai":
        assert by_sid["UpstreamApiKey"]["Resource"] == SCENARIOS["openai"]["UpstreamApiKeySecretArn"]
    else:
        assert "UpstreamApiKey" not in by_sid

    # Nothing else in the stack grants permissions: the only other role is API Gateway's
    # account-wide logging role (AWS's managed policy for it), and only when asked for.
    roles = resources_of(cfn, "AWS::IAM::Role")
    assert set(roles) == {"FunctionRole", "ApiGatewayCloudWatchRole"}
    assert roles["ApiGatewayCloudWatchRole"]["Condition"] == "CreateApiGatewayAccount"
    assert not resources_of(cfn, "AWS::IAM::Policy") and not resources_of(cfn, "AWS::IAM::ManagedPolicy")
    trust = cfn["Resources"]["FunctionRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
        }
    ]


def test_the_table_is_the_one_the_app_creates_locally(cfn: dict[str, Any]) -> None:
    from core.store.dynamodb import ensure_table

    class Recorder:
        class exceptions:  # boto3's shape
            class ResourceNotFoundException(Exception):
                pass

            class ResourceInUseException(Exception):
                pass

        def __init__(self) -> None:
            self.calls: dict[str, Any] = {}

        def describe_table(self, **kwargs: Any) -> None:
            raise self.exceptions.ResourceNotFoundException()

        def create_table(self, **kwargs: Any) -> None:
            self.calls["create_table"] = kwargs

        def update_time_to_live(self, **kwargs: Any) -> None:
            self.calls["update_time_to_live"] = kwargs

        def get_waiter(self, name: str) -> Any:
            class Waiter:
                def wait(self, **kwargs: Any) -> None:
                    return None

            return Waiter()

    recorder = Recorder()
    ensure_table(recorder, "t")
    local = recorder.calls["create_table"]
    table = cfn["Resources"]["SessionsTable"]
    props = table["Properties"]
    assert props["BillingMode"] == local["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(local["AttributeDefinitions"], key=str)
    assert props["KeySchema"] == local["KeySchema"]
    assert props["GlobalSecondaryIndexes"] == local["GlobalSecondaryIndexes"]
    ttl = recorder.calls["update_time_to_live"]["TimeToLiveSpecification"]
    assert props["TimeToLiveSpecification"] == ttl == {"Enabled": True, "AttributeName": "expires_at"}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_the_function_runs_the_streaming_runtime_as_configured(cfn: dict[str, Any]) -> None:
    function = cfn["Resources"]["ThreadlineFunction"]["Properties"]
    assert function["Runtime"] == {"Ref": "PythonRuntime"}
    assert cfn["Parameters"]["PythonRuntime"]["Default"] == "python3.13"  # docs/deployment.md says why
    assert function["Architectures"] == ["arm64"]
    assert function["Timeout"] == 900
    assert function["MemorySize"] == {"Ref": "MemorySize"}
    env = function["Environment"]["Variables"]
    wrapper = env["AWS_LAMBDA_EXEC_WRAPPER"]
    assert wrapper.startswith("/var/task/")
    assert (ROOT / "src" / wrapper.removeprefix("/var/task/")).stat().st_mode & 0o111  # executable
    module, _, attribute = env["THREADLINE_ASGI_APP"].partition(":")
    assert (ROOT / "src" / (module.replace(".", "/") + ".py")).is_file() and attribute == "app"
    handler_module = function["Handler"].rpartition(".")[0]
    assert (ROOT / "src" / (handler_module.replace(".", "/") + ".py")).is_file()
    assert env["SESSIONS_TABLE"] == {"Ref": "SessionsTable"}
    assert env["API_KEYS_SECRET_ARN"] == {"Ref": "ApiKeysSecret"}
    for variable, parameter in {
        "MODEL_PROVIDER": "ModelProvider",
        "HISTORY_WINDOW": "HistoryWindow",
        "SESSION_TTL_DAYS": "SessionTtlDays",
        "LISTING_SHARDS": "ListingShards",
        "LISTING_INTERVAL_SECONDS": "ListingIntervalSeconds",
    }.items():
        assert env[variable] == {"Ref": parameter}
    # Reserved concurrency only when asked for: 0 leaves the account's pool alone.
    assert "ReservedConcurrentExecutions" not in Resolver(cfn, {"ReservedConcurrency": "0"}).resolve(function)
    assert Resolver(cfn, {"ReservedConcurrency": "200"}).resolve(function)["ReservedConcurrentExecutions"] == "200"

    def env_for(scenario: dict[str, str]) -> dict[str, Any]:
        resolved = Resolver(cfn, scenario).resolve(function)
        return dict(resolved["Environment"]["Variables"])

    assert env_for({"ModelProvider": "echo"})["MODELS"] == "echo"
    assert env_for({"ModelId": "amazon.nova-pro-v1:0"})["MODELS"] == "amazon.nova-pro-v1:0"
    assert (
        env_for({"ModelId": "us.amazon.nova-pro-v1:0", "ModelName": "nova"})["MODELS"] == "nova=us.amazon.nova-pro-v1:0"
    )
    openai = env_for(SCENARIOS["openai"])
    assert openai["OPENAI_BASE_URL"] == "https://api.openai.com/v1"
    assert openai["OPENAI_API_KEY_SECRET_ARN"] == SCENARIOS["openai"]["UpstreamApiKeySecretArn"]
    bedrock = env_for(SCENARIOS["bedrock model"])
    assert "OPENAI_BASE_URL" not in bedrock and "OPENAI_API_KEY_SECRET_ARN" not in bedrock
    assert "CORS_ORIGINS" not in bedrock
    assert env_for({"CorsOrigins": "https://chat.example.com"})["CORS_ORIGINS"] == "https://chat.example.com"


def test_the_api_is_regional_throttled_logged_and_answers_errors_in_openai_shape(cfn: dict[str, Any]) -> None:
    (api,) = resources_of(cfn, "AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    (stage,) = resources_of(cfn, "AWS::ApiGateway::Stage").values()
    (settings,) = stage["Properties"]["MethodSettings"]
    assert settings["ResourcePath"] == "/*" and settings["HttpMethod"] == "*"
    assert settings["ThrottlingRateLimit"] == {"Ref": "ThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ThrottlingBurstLimit"}
    access = stage["Properties"]["AccessLogSetting"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(access["Format"])
    assert {"requestId", "status", "integrationStatus", "responseLatency"} <= set(fields)
    assert "$context.identity.apiKey" not in access["Format"]  # no credentials in the logs
    # The stage waits for the account's logging role (when the stack creates it).
    assert api["DependsOn"] == "ApiGatewayLoggingReady"
    ready = cfn["Resources"]["ApiGatewayLoggingReady"]["Metadata"]["Account"]
    assert ready == {"Fn::If": ["CreateApiGatewayAccount", {"Ref": "ApiGatewayAccount"}, "existing"]}
    responses = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    assert responses["THROTTLED"]["statusCode"] == 429
    for name, response in responses.items():
        body = response["responseTemplates"]["application/json"].replace("$context.error.messageString", '"m"')
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, name
    assert json.loads(responses["THROTTLED"]["responseTemplates"]["application/json"])["error"]["type"] == (
        "rate_limit_exceeded"
    )


def test_a_key_is_generated_unless_the_deployer_gives_theirs(cfn: dict[str, Any]) -> None:
    secret = cfn["Resources"]["ApiKeysSecret"]["Properties"]
    generated = Resolver(cfn, {}).resolve(secret)
    assert "SecretString" not in generated
    assert generated["GenerateSecretString"]["ExcludePunctuation"] is True  # no commas in a key
    assert generated["GenerateSecretString"]["PasswordLength"] >= 32
    given = Resolver(cfn, {"ApiKeys": "key-one,key-two"}).resolve(secret)
    assert given["SecretString"] == "key-one,key-two" and "GenerateSecretString" not in given
    assert cfn["Parameters"]["ApiKeys"]["NoEcho"] is True


def test_parameters_and_outputs(cfn: dict[str, Any]) -> None:
    assert {
        "ModelProvider",
        "ModelId",
        "OpenAIBaseUrl",
        "UpstreamApiKeySecretArn",
        "CorsOrigins",
        "HistoryWindow",
        "SessionTtlDays",
        "ApiKeys",
        "PythonRuntime",
    } <= set(cfn["Parameters"])
    outputs = cfn["Outputs"]
    assert {"ApiUrl", "ChatPageUrl", "ApiKeysSecretArn", "SessionsTableName"} <= set(outputs)
    assert outputs["ApiUrl"]["Value"]["Fn::Sub"].endswith("/prod/v1")
    assert outputs["ChatPageUrl"]["Value"]["Fn::Sub"].endswith("/prod/")
    assert outputs["ApiKeysSecretArn"]["Value"] == {"Ref": "ApiKeysSecret"}
    assert outputs["SessionsTableName"]["Value"] == {"Ref": "SessionsTable"}


@pytest.mark.parametrize(("tracing", "mode", "stage"), [("off", "PassThrough", False), ("on", "Active", True)])
def test_xray_tracing_is_a_template_option(cfn: dict[str, Any], tracing: str, mode: str, stage: bool) -> None:
    resolver = Resolver(cfn, {"ModelProvider": "echo", "Tracing": tracing})
    function = resolver.resolve(cfn["Resources"]["ThreadlineFunction"]["Properties"])
    assert function["TracingConfig"] == {"Mode": mode}
    stages = [resolver.resolve(r["Properties"]) for r in resources_of(cfn, "AWS::ApiGateway::Stage").values()]
    assert [s["TracingEnabled"] for s in stages] == [stage]


def _rule_holds(cfn: dict[str, Any], name: str, parameters: dict[str, str]) -> bool:
    """Whether CloudFormation lets the stack through rule `name` with these parameters."""
    resolver = Resolver(cfn, parameters)
    rule = cfn["Rules"][name]
    if not resolver.evaluate(rule["RuleCondition"]):
        return True
    return all(resolver.evaluate(assertion["Assert"]) for assertion in rule["Assertions"])


def test_snapstart_is_an_option_for_python_3_12_and_later(cfn: dict[str, Any]) -> None:
    assert cfn["Parameters"]["SnapStart"]["Default"] == "off"
    function = cfn["Resources"]["ThreadlineFunction"]["Properties"]
    for setting, apply_on in [("off", "None"), ("on", "PublishedVersions")]:
        resolved = Resolver(cfn, {"SnapStart": setting, "PythonRuntime": "python3.12"}).resolve(function)
        assert resolved["SnapStart"] == {"ApplyOn": apply_on}
    # A version is published and the alias `live` follows it; the API invokes the alias.
    (alias,) = resources_of(cfn, "AWS::Lambda::Alias").values()
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionName"] == {"Ref": "ThreadlineFunction"}
    assert len(resources_of(cfn, "AWS::Lambda::Version")) == 1
    # CloudFormation refuses SnapStart with python3.11 (Lambda supports it from 3.12).
    rule = "SnapStartNeedsPython312"
    assert not _rule_holds(cfn, rule, {"SnapStart": "on", "PythonRuntime": "python3.11"})
    for runtime in ("python3.12", "python3.13", "python3.14"):
        assert _rule_holds(cfn, rule, {"SnapStart": "on", "PythonRuntime": runtime})
    assert _rule_holds(cfn, rule, {"SnapStart": "off", "PythonRuntime": "python3.11"})


def test_background_jobs_invoke_the_functions_own_alias_with_bounded_retries(cfn: dict[str, Any]) -> None:
    """A background response is an asynchronous invocation of this function: of its
    alias, the one qualifier Lambda applies the template's retry settings to, and the
    one ARN the role may invoke; an event is dropped before a queued response's
    reader would end it as never started."""
    from core.responses.recorded import QUEUE_SECONDS

    resolver = Resolver(cfn)
    function = resolver.resolve(cfn["Resources"]["ThreadlineFunction"]["Properties"])
    (alias,) = resources_of(cfn, "AWS::Lambda::Alias").values()
    env = function["Environment"]["Variables"]
    assert env["BACKGROUND_DISPATCH"] == "lambda"
    assert env["THREADLINE_JOB_QUALIFIER"] == alias["Properties"]["Name"] == "live"

    (config,) = resources_of(cfn, "AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": "ThreadlineFunction"}
    assert props["Qualifier"] == "live"
    assert props["MaximumRetryAttempts"] == 2
    assert props["MaximumEventAgeInSeconds"] == 600 < QUEUE_SECONDS
    assert not props.get("DestinationConfig")  # no other resource is written to

    # The ARN the role names is this function's: its fixed name, from the stack name.
    assert function["FunctionName"] == "threadline-test-threadline"
    long_stack = Resolver(cfn)
    long_stack.values["AWS::StackName"] = "s" * 53  # the longest docs/deployment.md allows
    assert len(long_stack.resolve(cfn["Resources"]["ThreadlineFunction"]["Properties"])["FunctionName"]) == 64
