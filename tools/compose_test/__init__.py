"""`make compose-test`: docker-compose.yml's core, built and run in containers, checked from the host.

It builds the images (tools/container), brings up Kafka, Redis, the one-shot jobs
and every Handrail service of docker-compose.yml in the order its ``depends_on``
gives, submits expense claims over the published Kafka port, checks their
results and a review over the published human-review port, and tears it all
down (containers, networks, volumes), whatever happened. The observability
services (collector, Jaeger, Prometheus, Grafana, the Kafka exporter) are left
out: their images come only from registries, and tests/deploy checks them offline.

Errors::

    ComposeTestFailed     a step failed: an image did not build, a service did not come up, a check failed
"""

from __future__ import annotations


class ComposeTestFailed(Exception):
    """A step of the compose test failed; the message says which and what to look at."""
