"""The soak's users: a submitter publishing tasks at a steady rate, and reviewers approving over HTTP."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import httpx
from aiokafka.errors import KafkaError
from tools.chaos.cluster import Cluster

from handrail.bus import make_producer
from handrail.messages import TaskSubmitted

log = logging.getLogger("chaos")

#: Which reviewers approve a review asking for each role (two directors where two must agree).
APPROVERS = {"manager": ("ana",), "director": ("dan", "dora"), "reviewer": ("ana",)}


def claim(rng: random.Random) -> dict[str, object]:
    """Most claims decide themselves; some need a manager, a few two directors."""
    roll = rng.random()
    amount = rng.uniform(10, 450) if roll < 0.8 else rng.uniform(600, 4000) if roll < 0.95 else rng.uniform(6000, 9000)
    return {"employee_id": "E100", "amount": round(amount, 2), "currency": "USD", "description": "chaos soak"}


def vendor(rng: random.Random) -> dict[str, object]:
    """A vendor for due diligence: its checks run in parallel, its risk class is voted, its summary revised."""
    n = rng.randrange(1000)
    return {"vendor_id": f"V{n:03d}", "vendor_name": f"Vendor {n}", "country": rng.choice(["DE", "FR", "US"])}


@dataclass
class Submitter:
    """Publishes ``count`` tasks, ``rate_per_s`` a second, on the public tasks topic: expense claims, and a
    ``vendor_share`` of vendor due diligence (forks, joins, votes and iterations under the same faults)."""

    cluster: Cluster
    count: int
    rate_per_s: float
    rng: random.Random
    vendor_share: float = 0.2
    submitted: dict[str, float] = field(default_factory=dict)

    def task(self, i: int) -> TaskSubmitted:
        if self.rng.random() < self.vendor_share:
            workflow, task_input = "vendor-due-diligence", vendor(self.rng)
        else:
            workflow, task_input = "expense-approval", claim(self.rng)
        return TaskSubmitted(task_id=f"chaos-{i:05d}", workflow=workflow, input=task_input, submitted_by="chaos")

    async def run(self) -> None:
        producer = make_producer(self.cluster.bootstrap, "chaos-submitter", request_timeout_ms=60000)
        await producer.start()
        started = time.monotonic()
        try:
            for i in range(self.count):
                await asyncio.sleep(max(0.0, started + i / self.rate_per_s - time.monotonic()))
                task = self.task(i)
                while True:  # a user retries a submission the broker did not take: the same id, so idempotent
                    try:
                        await producer.send_and_wait(
                            self.cluster.topics.tasks, task.to_bytes(), key=task.task_id.encode()
                        )
                        break
                    except KafkaError as exc:
                        log.info("submitting %s: %s; trying again", task.task_id, exc)
                        await asyncio.sleep(1.0)
                self.submitted[task.task_id] = time.monotonic()
        finally:
            await producer.stop()


@dataclass
class Reviewers:
    """Approve every pending review over the review API, as the people it names would."""

    cluster: Cluster
    approvals: int = 0
    errors: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.cluster.review_url, timeout=5.0) as http:
            while not stop.is_set():
                try:
                    await self._round(http)
                except httpx.HTTPError as exc:  # human-review restarting, or Kafka down behind it
                    self.errors += 1
                    log.debug("review round: %s", exc)
                await asyncio.sleep(1.0)

    async def _round(self, http: httpx.AsyncClient) -> None:
        auth = self._auth("dan")
        pending = await http.get("/api/reviews", params={"status": "pending"}, headers=auth)
        if pending.status_code != 200:
            self.errors += 1
            return
        for review in pending.json():
            for who in APPROVERS.get(review["role"], ("dan",)):
                if who in review.get("approvals", []):
                    continue
                answer = await http.post(f"/api/reviews/{review['review_id']}/approve", headers=self._auth(who))
                if answer.status_code == 200:
                    self.approvals += 1
                else:
                    self.errors += 1

    def _auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cluster.tokens[who]}"}
