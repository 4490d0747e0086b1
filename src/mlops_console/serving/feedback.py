"""POST /feedback: ground-truth labels for earlier predictions.

Labels drive decay alerts, rollbacks, retraining and training data, so writing them is
guarded: JSON only (a web page cannot send it as a "simple" request), the Host header must
name this server (no DNS rebinding), an optional feedback token (separate from the admin
token), a rate limit per client, and the first label for a (request, row) wins: a later
one is counted as a duplicate and not recorded. Each label records its source.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlops_console.serving.admin import check_host
from mlops_console.serving.http import (
    Call,
    HttpError,
    content_type,
    endpoint,
    json_response,
    read_body,
)
from mlops_console.serving.inputs import loads

if TYPE_CHECKING:
    from mlops_console.serving.server import Server

MAX_ITEMS = 10_000  # labels per request
SEEN = 1_000_000  # (request id, row) pairs remembered for first-label-wins
SHAPE = 'Send JSON: {"request_id": ID, "label": VALUE, "row": 0} or a list of them.'


class FeedbackGuard:
    def __init__(self, server: Server):
        self.server = server
        self.buckets: dict[str, tuple[float, float]] = {}  # client: (tokens, last time)
        self.seen: OrderedDict[tuple[str, int], None] = OrderedDict()

    def allow(self, client: str) -> bool:
        """A token bucket per client: `feedback_rate` requests per second, bursts of twice."""
        rate = self.server.settings.feedback_rate
        now = time.monotonic()
        tokens, last = self.buckets.get(client, (rate * 2, now))
        tokens = min(rate * 2, tokens + (now - last) * rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return False
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > 10_000:  # forget the quietest clients
            for key in list(self.buckets)[:5000]:
                del self.buckets[key]
        return True

    def first(self, key: tuple[str, int]) -> bool:
        if key in self.seen:
            return False
        self.seen[key] = None
        if len(self.seen) > SEEN:
            self.seen.popitem(last=False)
        return True


def _items(body) -> list[dict]:
    items = body.get("feedback", body) if isinstance(body, dict) else body
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list) or not items:
        raise HttpError(400, SHAPE)
    if len(items) > MAX_ITEMS:
        raise HttpError(413, f"Send at most {MAX_ITEMS} labels per request.")
    for i, item in enumerate(items):
        rid = item.get("request_id") if isinstance(item, dict) else None
        if (
            not isinstance(rid, str | int)
            or isinstance(rid, bool)
            or rid == ""
            or "label" not in item
        ):
            raise HttpError(400, f"Item {i} needs a request_id and a label (nothing was recorded).")
        row = item.get("row", 0)
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise HttpError(400, f"Item {i}: row must be a row number (0, 1, ...), not {row!r}.")
    return items


def routes(server: Server) -> list[Route]:
    guard = server.feedback

    @endpoint(server, "feedback")
    async def feedback(request: Request, call: Call) -> Response:
        check_host(server, request)
        token = server.settings.feedback_token
        if token:
            got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(got.encode(), token.encode()):
                raise HttpError(
                    401, "A valid feedback token is required (Authorization: Bearer TOKEN)."
                )
        client = request.client.host if request.client else "unknown"
        if not guard.allow(client):
            raise HttpError(
                429,
                f"Too many feedback requests from {client} (MLOPS_FEEDBACK_RATE="
                f"{server.settings.feedback_rate:g}/s); slow down.",
                {"retry-after": "1"},
            )
        if content_type(request, "") != "application/json":
            raise HttpError(415, "Send feedback as application/json.")
        body = await read_body(server, request, call)
        items = _items(loads(body))
        now = time.time()
        source = f"feedback:{client}" + (":token" if token else "")
        accepted = duplicates = 0
        for item in items:
            key = (str(item["request_id"]), item.get("row", 0))
            if not guard.first(key):
                duplicates += 1
                continue
            server.log.append(
                {
                    "kind": "feedback",
                    "ts": now,
                    "request_id": key[0],
                    "row": key[1],
                    "label": item["label"],
                    "source": source,
                }
            )
            accepted += 1
        return json_response({"accepted": accepted, "duplicates": duplicates}, 202)

    return [Route("/feedback", feedback, methods=["POST"])]
