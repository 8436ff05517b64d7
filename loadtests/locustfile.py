"""Locust load test of the genderd HTTP API: a site rendering pages for its shoppers.

Each simulated shopper browses: most requests look up their department (the call the site
makes on every page render), some fetch every model's answer, a few send their page view
(ingest), and a back-office user occasionally runs a batch lookup. Point it only at your own
deployment, e.g. the API of `genderd up --demo` (clients C1..C1000 have answers):

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \
        --headless --users 50 --spawn-rate 10 --run-time 30s

Set GENDERD_CLIENTS for the number of client ids to draw from (default 1000) and
GENDERD_API_TOKEN / GENDERD_READ_TOKEN when the API requires tokens for ingest / reads.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, task

CLIENTS = int(os.environ.get("GENDERD_CLIENTS", "1000"))
GENDERS = ("female", "male")
TOKEN = os.environ.get("GENDERD_API_TOKEN")
READ_TOKEN = os.environ.get("GENDERD_READ_TOKEN")
INGEST_HEADERS = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
READ_HEADERS = {"Authorization": f"Bearer {READ_TOKEN}"} if READ_TOKEN else {}


def some_client() -> str:
    return f"C{random.randint(1, CLIENTS)}"


class Shopper(FastHttpUser):
    """A page render: a lookup per page, now and then the page view itself."""

    wait_time = between(0.05, 0.2)
    weight = 20  # twenty shoppers per back-office user

    @task(20)
    def department(self) -> None:
        model = random.choice(("top", "top7d", "last"))
        with self.client.get(
            f"/v1/clients/{some_client()}/gender?model={model}",
            name="/v1/clients/[cid]/gender",
            headers=READ_HEADERS,
            catch_response=True,
        ) as response:
            if response.status_code == 404:  # a shopper without an answer yet: not a failure
                response.success()

    @task(3)
    def every_model(self) -> None:
        with self.client.get(
            f"/v1/clients/{some_client()}",
            name="/v1/clients/[cid]",
            headers=READ_HEADERS,
            catch_response=True,
        ) as response:
            if response.status_code == 404:
                response.success()

    @task(2)
    def page_view(self) -> None:
        self.client.post(
            "/v1/events",
            json={"cid": some_client(), "gender": random.choice(GENDERS)},
            headers=INGEST_HEADERS,
        )


class BackOffice(FastHttpUser):
    """A batch job: 100 clients at a time."""

    wait_time = between(0.5, 1.0)
    weight = 1

    @task
    def batch(self) -> None:
        cids = [some_client() for _ in range(100)]
        self.client.post("/v1/lookup", json={"cids": cids, "model": "top"}, headers=READ_HEADERS)
