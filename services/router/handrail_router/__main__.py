"""``python -m handrail_router``: run the router."""

from handrail.service.main import run_service
from handrail_router.app import create
from handrail_router.settings import RouterSettings

if __name__ == "__main__":
    run_service(lambda: create(RouterSettings()))
