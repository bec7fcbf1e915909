"""Errors raised by the local infrastructure launcher (``handrail dev``).

Every message says what to do next: what to install, or which log file to read.

    DevInfraError                 root of everything ``handrail_dev`` raises on purpose
    ├── ToolNotFoundError         a program the launcher needs (java, mvn, redis-server) is missing
    ├── KafkaJarsError            Maven could not resolve the Kafka broker jars
    ├── PortConflictError         something answers on the configured port, but not as Kafka / Redis
    ├── ServiceStartError         a server process exited early or did not become ready in time
    └── ServiceStopError          a server process survived SIGTERM and SIGKILL
"""

from __future__ import annotations

from handrail.errors import HandrailError


class DevInfraError(HandrailError):
    """Root of every error the local infrastructure launcher raises on purpose."""


class ToolNotFoundError(DevInfraError):
    """A program the launcher needs is not installed; the message says how to install it."""


class KafkaJarsError(DevInfraError):
    """``mvn dependency:copy-dependencies`` failed; the message carries Maven's output."""


class PortConflictError(DevInfraError):
    """The configured address accepts TCP connections but does not answer as the expected server."""


class ServiceStartError(DevInfraError):
    """A server exited during start-up or was not ready before its deadline; see the named log file."""


class ServiceStopError(DevInfraError):
    """A server started by ``up`` is still alive after SIGTERM and SIGKILL."""
