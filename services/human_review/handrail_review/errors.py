"""What a reviewer's request can run into; each class carries its HTTP status.

ReviewError              root of the errors a reviewer's request gets back as a JSON body
├── NotAuthenticated     no token, or one nobody has -> 401
├── NotAllowed           the reviewer's roles may not decide this review -> 403
├── ReviewNotFound       no review with this id -> 404
├── AlreadyDecided       the review was decided (or escalated) meanwhile -> 409
├── NothingChanged       the action is already counted (a repeat): it changes nothing -> 409
├── InvalidEdit          edit-and-approve with a patch that does not apply -> 422
├── InvalidTopUp         a top-up where none may be granted, or more than the workflow allows -> 422
├── TooLarge             a request body, or the edit it makes, over its size limit -> 413
└── NotReady             the index is still being rebuilt from Kafka -> 503
"""

from __future__ import annotations

from handrail.errors import HandrailError


class ReviewError(HandrailError):
    """A reviewer's request that cannot be served; ``status`` and ``code`` go into the JSON error body."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotAuthenticated(ReviewError):
    status = 401
    code = "unauthenticated"


class NotAllowed(ReviewError):
    status = 403
    code = "forbidden"


class ReviewNotFound(ReviewError):
    status = 404
    code = "not_found"


class AlreadyDecided(ReviewError):
    status = 409
    code = "already_decided"


class NothingChanged(ReviewError):
    status = 409
    code = "unchanged"


class InvalidEdit(ReviewError):
    status = 422
    code = "invalid_edit"


class InvalidTopUp(ReviewError):
    status = 422
    code = "invalid_top_up"


class TooLarge(ReviewError):
    status = 413
    code = "too_large"


class NotReady(ReviewError):
    status = 503
    code = "rebuilding"
