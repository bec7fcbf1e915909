"""``python -m handrail_circuit_breaker``: run the circuit-breaker service."""

from handrail.service.main import run_service
from handrail_circuit_breaker.app import create
from handrail_circuit_breaker.settings import BreakerSettings

if __name__ == "__main__":
    run_service(lambda: create(BreakerSettings()))
