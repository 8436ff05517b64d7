"""The metrics' ``method`` label takes a bounded set of values: a client sending made-up
methods (any ASGI server may pass them through) cannot create a series each."""

from __future__ import annotations

import random
import string

from prometheus_client.parser import text_string_to_metric_families

from genderd.api.metrics import METHODS, method_label

from .support.api_helpers import ApiClient


def _methods_counted(api: ApiClient) -> set[str]:
    families = text_string_to_metric_families(api.get("/metrics").text)
    return {
        sample.labels["method"]
        for family in families
        if family.name == "genderd_http_requests"
        for sample in family.samples
        if "method" in sample.labels
    }


def test_made_up_methods_share_one_label_value(api: ApiClient) -> None:
    rnd = random.Random(8)
    invented = {"".join(rnd.choices(string.ascii_uppercase, k=12)) for _ in range(200)}
    for method in invented:
        assert api.request(method, "/healthz").status_code == 405
    api.get("/healthz")
    counted = _methods_counted(api)
    assert counted <= METHODS | {"other"}
    assert {"GET", "other"} <= counted


def test_standard_methods_keep_their_names() -> None:
    assert [method_label(m) for m in ("GET", "POST", "DELETE", "BREW", "get")] == [
        "GET",
        "POST",
        "DELETE",
        "other",
        "other",
    ]
