"""Schemathesis hooks for `make test` (loaded through schemathesis.toml).

`POST /v1/products/import` takes `application/x-ndjson`, which schemathesis
cannot serialise by itself: a generated object becomes one NDJSON line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return (json.dumps(value) + "\n").encode()
