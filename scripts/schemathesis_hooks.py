"""Schemathesis hooks for `make test` (loaded through schemathesis.toml).

`POST /v1/products/import` takes `application/x-ndjson`, which schemathesis
cannot serialise by itself: a generated object becomes one NDJSON line.
Orders and products get real ids to name (below).
"""

import json
import os
import uuid

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return (json.dumps(value) + "\n").encode()


# `POST /v1/orders` names products and one of the caller's addresses, and a
# product names its category, which random UUIDs never are: without real ids
# only the 400 or 404 of an unknown one is ever fuzzed, never the operation
# itself or its success response against the schema. scripts/schemathesis.sh
# seeds real ones (GOCOMMERCE_ST_FIXTURES) and says whose token the run uses
# (GOCOMMERCE_ST_CALLER); every well-formed id the generator drew is swapped
# for a real one. Ids that are not UUIDs stay as drawn: they are a negative
# case's violation, and must still be refused.
def _load_fixtures():
    path = os.environ.get("GOCOMMERCE_ST_FIXTURES")
    if not path:
        return None
    with open(path) as file:
        return json.load(file)


FIXTURES = _load_fixtures()


def _is_uuid(value):
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# Before the call rather than at generation, so every phase's orders get them
# (the stateful phase draws its bodies apart from the generation hooks).
@schemathesis.hook
def before_call(ctx, case, kwargs):
    body = case.body
    if FIXTURES is None or not isinstance(body, dict):
        return
    if case.operation.label in ("POST /v1/products", "PATCH /v1/products/{id}"):
        if _is_uuid(body.get("category_id")):
            body["category_id"] = FIXTURES["category"]
        return
    if case.operation.label != "POST /v1/orders":
        return
    if _is_uuid(body.get("shipping_address_id")):
        body["shipping_address_id"] = FIXTURES["addresses"][os.environ["GOCOMMERCE_ST_CALLER"]]
    items = body.get("items")
    if isinstance(items, list):
        products = FIXTURES["products"]
        # The i-th line gets the i-th product: as many products as an order
        # may have lines, so each is named at most once (a longer list, a
        # negative case, wraps around).
        for index, item in enumerate(items):
            if isinstance(item, dict) and _is_uuid(item.get("product_id")):
                item["product_id"] = products[index % len(products)]

