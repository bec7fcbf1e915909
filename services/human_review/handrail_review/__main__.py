"""``python -m handrail_review``: run the human-review service."""

from handrail.service.main import run_service
from handrail_review.app import create
from handrail_review.settings import ReviewSettings

if __name__ == "__main__":
    run_service(lambda: create(ReviewSettings()))
