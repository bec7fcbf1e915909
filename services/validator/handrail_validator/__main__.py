"""``python -m handrail_validator``: run the validator."""

from handrail.service.main import run_service
from handrail_validator.app import create
from handrail_validator.settings import ValidatorSettings

if __name__ == "__main__":
    run_service(lambda: create(ValidatorSettings()))
