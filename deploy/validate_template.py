"""`make validate`: translate template.yaml with the SAM translator, cfn-lint both templates.

cfn-lint (1.x) no longer runs the SAM translator: on a SAM template it only checks
the `AWS::Serverless::*` resources against schemas (it passes an `Api` event naming a
`RestApiId` that does not exist, for one). So this does what `sam build`/`sam
deploy` do before CloudFormation sees the template:

1. cfn-lint on template.yaml as written (SAM schemas, parameters, conditions, rules);
2. the SAM translator (`aws-sam-translator`, the library CloudFormation's
   `AWS::Serverless` transform runs) with a region and an S3 placeholder in place of
   the local `CodeUri`, exactly as the SAM CLI swaps one in (the translator rejects
   a local path);
3. cfn-lint on the CloudFormation it produced, written to
   `.aws-sam/validate/template.json` (the tests read it).

Then it prints the API's routes as the translated template wires them. Any cfn-lint
error or warning, or a translator error, fails (exit 1). Runs with the deploy tools'
interpreter (`.venv/deploy/bin/python`), never touches AWS: the translator gets no
IAM client (this template names no managed policies for SAM to look up).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
OUTPUT = ROOT / ".aws-sam" / "validate" / "template.json"
REGION = "us-east-1"
PLACEHOLDER_CODE_URI = "s3://threadline-validate-placeholder/function.zip"
PSEUDO_PARAMETERS = {
    "AWS::Region": REGION,
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "threadline-validate",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/threadline-validate/00000000",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
}


class _NoManagedPolicies:
    """Stands in for the translator's IAM lookup of managed policy names, which this
    template never needs (its roles are written out); it must not reach AWS."""

    def load(self) -> dict[str, str]:
        return {}


def _lint(template: dict[str, Any], label: str) -> list[Any]:
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    matches = lint(json.dumps(template), config=ManualArgs(regions=[REGION]))
    for match in matches:
        print(f"  {label}: {match}")
    return [m for m in matches if m.rule.id[0] in ("E", "W")]


def _sam_parameters(template: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = dict(PSEUDO_PARAMETERS)
    for name, spec in (template.get("Parameters") or {}).items():
        if "Default" in spec:
            values[name] = spec["Default"]
    return values


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation template the `AWS::Serverless-2016-10-31` transform makes."""
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    logging.getLogger("samtranslator").setLevel(logging.ERROR)  # its feature-toggle chatter
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(template)
    for resource in (sam.get("Resources") or {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = PLACEHOLDER_CODE_URI
    try:
        return dict(transform(sam, _sam_parameters(template), _NoManagedPolicies()))  # type: ignore[arg-type]
    except InvalidDocumentException as error:
        for cause in error.causes:
            print(f"  SAM translator: {cause.message}")
        raise SystemExit(1) from None


def routes(cfn: dict[str, Any]) -> list[str]:
    """`METHOD path -> integration` for every route of every REST API in the template."""
    lines: list[str] = []
    for name, resource in cfn["Resources"].items():
        if resource["Type"] != "AWS::ApiGateway::RestApi":
            continue
        for path, item in (resource["Properties"].get("Body", {}).get("paths") or {}).items():
            for method, operation in item.items():
                integration = operation.get("x-amazon-apigateway-integration", {})
                uri = json.dumps(integration.get("uri"))
                verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                streaming = "response-streaming-invocations" in uri
                lines.append(
                    f"{name}: {verb} {path} -> {integration.get('type')}, "
                    f"responseTransferMode {integration.get('responseTransferMode', 'BUFFERED')}, "
                    f"{'InvokeWithResponseStream' if streaming else 'Invoke'}, "
                    f"timeout {integration.get('timeoutInMillis', 29000)} ms"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    from cfnlint.decode.decode import decode

    template, errors = decode(str(args.template))
    if errors or template is None:
        for error in errors or []:
            print(f"  {error}")
        return 1
    template = json.loads(json.dumps(template))  # plain dicts and lists
    shown = args.template.relative_to(ROOT) if args.template.is_relative_to(ROOT) else args.template

    failures = _lint(template, "SAM template")
    print(f"cfn-lint {shown} (SAM schemas): {'FAILED' if failures else 'ok'}")

    cfn = translate(template)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(cfn, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    kinds: dict[str, int] = {}
    for resource in cfn["Resources"].values():
        kinds[resource["Type"]] = kinds.get(resource["Type"], 0) + 1
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    output = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"SAM translator ({REGION}): {len(cfn['Resources'])} resources -> {output}")
    print(f"  {summary}")

    translated_failures = _lint(cfn, "translated")
    print(f"cfn-lint translated template: {'FAILED' if translated_failures else 'ok'}")
    for line in routes(cfn):
        print(f"  route {line}")
    if failures or translated_failures:
        print(f"validate: {len(failures) + len(translated_failures)} cfn-lint errors or warnings", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
