#!/usr/bin/env python3
"""Validates every GoCommerce resource in the given files against the
openAPIV3Schema of the generated CRD, as `kubectl apply` would (less the CEL
rules, which `gocommerce-operator render` checks again). Unknown fields are
errors here: the API server would silently prune them.

Usage: validate_examples.py CRD_FILE EXAMPLE_FILE...
"""
import copy
import sys

import jsonschema
import yaml


def strict(schema):
    """Turns an OpenAPI v3 structural schema into a JSON schema that refuses
    unknown fields and accepts null where the schema says nullable."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.get("nullable") and "type" in node:
            node["type"] = [node["type"], "null"]
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for key in ("properties",):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("anyOf", "oneOf", "allOf"):
            for child in node.get(key, []):
                walk(child)

    walk(schema)
    return schema


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        crd = yaml.safe_load(f)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = strict(version["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server itself, not by this schema.
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"const": "gocommerce.io/v1alpha1"}
    schema["properties"]["kind"] = {"const": "GoCommerce"}
    validator = jsonschema.Draft7Validator(schema)
    failures = checked = 0
    for path in argv[2:]:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        for doc in documents:
            if doc.get("kind") != "GoCommerce":
                continue
            checked += 1
            name = doc.get("metadata", {}).get("name", "?")
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            for error in errors:
                location = "/".join(str(p) for p in error.path) or "(root)"
                print(f"FAIL {path} {name}: {location}: {error.message}")
            if errors:
                failures += 1
            else:
                print(f"ok   {path} {name}")
    if checked == 0:
        print("no GoCommerce resource found", file=sys.stderr)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
