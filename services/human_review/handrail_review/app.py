"""Wiring only: the review service's runtime, reviewers, index, projector, sweeper, autonomy watch, task console,
HTTP endpoints."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from handrail import asyncapi
from handrail.autonomy import Recorder
from handrail.bus import make_reader
from handrail.service import Runtime, asgi_app, build_runtime
from handrail_review.api import build_api
from handrail_review.autonomy import AutonomyWatch
from handrail_review.background import Background, sweeper
from handrail_review.console_api import Console, add_console
from handrail_review.handlers import SERVICE, ReviewDesk
from handrail_review.index import ReviewIndex
from handrail_review.projector import Projector
from handrail_review.reviewers import load_directory
from handrail_review.serving import serve_with
from handrail_review.settings import ReviewSettings
from handrail_review.tasks_index import TaskIndex
from handrail_review.tasks_projector import TasksProjector


def create(settings: ReviewSettings | None = None) -> tuple[Runtime, AsgiFastStream]:
    """Build the human-review app."""
    settings = settings or ReviewSettings()
    runtime = build_runtime(SERVICE, settings)
    directory = load_directory(settings.reviewers_path(), settings.tokens(), runtime.contracts)
    desk = ReviewDesk(
        runtime,
        directory,
        ReviewIndex(runtime.redis, settings.redis_prefix),
        max_edit_bytes=settings.review_max_edit_bytes,
    )
    projector = Projector(
        lambda: make_reader(settings.kafka_bootstrap, f"handrail-{SERVICE}-projector", runtime.credentials),
        runtime.topics.reviews_requested,
        runtime.topics.reviews_decided,
        desk,
        settings.retry_backoff_s,
        generation=lambda: runtime.keeper.generation,
    )
    api = build_api(
        desk,
        projector.ready,
        asyncapi=asyncapi.document(runtime.contracts, runtime.topics),
        max_body_bytes=settings.review_max_body_bytes,
    )
    tasks = TasksProjector(
        lambda: make_reader(settings.kafka_bootstrap, f"handrail-{SERVICE}-console", runtime.credentials),
        runtime.topics.audit,
        runtime.topics.dlq,
        TaskIndex(runtime.redis, settings.redis_prefix),
        settings.retry_backoff_s,
        generation=lambda: runtime.keeper.generation,
    )
    add_console(api, Console(tasks.index, tasks.ready, settings.trace_url_template))
    app = serve_with(asgi_app(runtime), api)
    watch = AutonomyWatch(
        runtime.autonomy,
        Recorder(runtime.publisher, runtime.topics.control, runtime.audit),
        runtime.topics,
        lambda: make_reader(settings.kafka_bootstrap, f"handrail-{SERVICE}-autonomy", runtime.credentials),
        interval_s=settings.autonomy_interval_s,
        backoff_s=settings.retry_backoff_s,
    )
    background = Background(
        projector.run, sweeper(desk, projector.ready, settings.review_sweep_interval_s), watch.run, tasks.run
    )
    app.after_startup(background.start)
    app.on_shutdown(background.stop)
    return runtime, app
