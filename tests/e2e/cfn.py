"""Just enough of CloudFormation's intrinsic functions to read a template under chosen parameters.

`Resolver(template, parameters)` evaluates the template's Conditions for those
parameter values, then `resolve(node)` prunes every `Fn::If` to the branch taken,
drops `AWS::NoValue`, and substitutes parameters and pseudo parameters (in `Ref`
and in `Fn::Sub` strings). References to resources (`Ref`, `Fn::GetAtt`,
`${Resource.Attr}`) stay as they are: what a statement's `Resource` points at is
still visible, and a literal `"*"` can be told from an ARN.
"""

from __future__ import annotations

import re
from typing import Any

PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "threadline-test",
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()


class Resolver:
    def __init__(self, template: dict[str, Any], parameters: dict[str, str] | None = None) -> None:
        self.template = template
        self.values: dict[str, Any] = dict(PSEUDO)
        for name, spec in (template.get("Parameters") or {}).items():
            if "Default" in spec:
                self.values[name] = str(spec["Default"])
        self.values.update(parameters or {})
        unknown = set(parameters or {}) - set(template.get("Parameters") or {})
        if unknown:
            raise KeyError(f"not parameters of the template: {sorted(unknown)}")
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions") or {}:
            self.condition(name)

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.evaluate(self.template["Conditions"][name]))
        return self.conditions[name]

    def evaluate(self, node: Any) -> Any:
        """The value of an expression made of parameters only (conditions and their inputs)."""
        if not isinstance(node, dict) or len(node) != 1:
            return node
        ((function, argument),) = node.items()
        if function == "Ref":
            return self.values[argument]
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::Equals":
            left, right = (self.evaluate(part) for part in argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not self.evaluate(argument[0])
        if function == "Fn::And":
            return all(self.evaluate(part) for part in argument)
        if function == "Fn::Or":
            return any(self.evaluate(part) for part in argument)
        if function == "Fn::Select":
            index, items = argument
            return self.evaluate(items)[int(self.evaluate(index))]
        if function == "Fn::Split":
            delimiter, text = argument
            return str(self.evaluate(text)).split(delimiter)
        if function == "Fn::Join":
            delimiter, items = argument
            return delimiter.join(str(self.evaluate(item)) for item in self.evaluate(items))
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            names = {key: self.evaluate(value) for key, value in variables.items()}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(names.get(m.group(1), self.values[m.group(1)])), text)
        raise ValueError(f"cannot evaluate {function} here")

    def resolve(self, node: Any) -> Any:
        result = self._resolve(node)
        return None if result is NO_VALUE else result

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self._resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Fn::If":
                name, when_true, when_false = argument
                return self._resolve(when_true if self.condition(name) else when_false)
            if function == "Ref":
                if argument == "AWS::NoValue":
                    return NO_VALUE
                if argument in self.values:
                    return self.values[argument]
                return node
            if function == "Fn::Sub":
                return self._sub(argument)
        resolved = {key: self._resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _sub(self, argument: Any) -> Any:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        local = {key: self._resolve(value) for key, value in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in local and isinstance(local[name], str):
                return str(local[name])
            if name in self.values:
                return str(self.values[name])
            try:
                value = self.evaluate(variables[name]) if name in variables else None
            except (KeyError, ValueError):
                value = None
            return str(value) if isinstance(value, str) else match.group(0)

        substituted = re.sub(r"\$\{([^}!]+)\}", replace, text)
        if "${" not in substituted:
            return substituted
        return {"Fn::Sub": substituted}
