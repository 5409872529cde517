"""`POST /outcomes/{side}`: domain events for the outcome comparison from services that call back over HTTP
instead of publishing to Kafka."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strangler.events.model import DomainEvent
from strangler.routing.admin_api import problem
from strangler.shadow.outcome_service import OutcomeService
from strangler.store import StoreUnavailable


def outcome_routes(service: OutcomeService) -> list[Any]:
    """`POST /outcomes/{side}`: a domain event (or a list of them) from `legacy` or `new`. It answers 202 once
    the store holds what the events did; 503 asks the caller to send them again (duplicates are ignored)."""

    async def receive(request: Request) -> Response:
        side = request.path_params["side"]
        if side not in ("legacy", "new"):
            return problem(404, "Not Found", "side must be 'legacy' or 'new'")
        if not service.restored:
            return problem(503, "Service Unavailable", "the outcome comparison has not restored its state from the "
                           "store yet: send the events again later")
        try:
            body = orjson.loads(await request.body())
            items = body if isinstance(body, list) else [body]
            events = [DomainEvent.model_validate(item) for item in items]
        except (orjson.JSONDecodeError, ValidationError) as exc:
            return problem(422, "Unprocessable Content", f"not a domain event: {str(exc).splitlines()[0]}")
        results = [r for event in events for r in service.feed(side, event)]
        try:
            await service.persist()
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", f"the events were taken but are not stored yet ({exc}): "
                           "sending them again is harmless")
        return JSONResponse({"accepted": len(events), "results": [
            {"kind": r.kind, "aggregate_type": r.aggregate_type, "aggregate_id": r.aggregate_id,
             "family": r.family, "correlation_id": r.correlation_id,
             "fields": [{"path": f.path, "classification": f.resolution.classification,
                         "winner": f.resolution.winner, "explanation": f.resolution.explanation} for f in r.fields]}
            for r in results]}, status_code=202)

    return [Route("/outcomes/{side}", receive, methods=["POST"])]
