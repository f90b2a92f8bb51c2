"""/v1/webhooks: Standard Webhooks endpoints, their secrets, their delivery log and redelivery.

Writes need an admin or ops key; any key of the workspace reads. An endpoint's URL is checked
through processors/outbound.py when saved (a private or loopback address needs the workspace's
allow-list) and again at every send. The signing secret is answered once, on create and on
rotate, and never again (it is stored encrypted): a create retried with its Idempotency-Key
answers with the same endpoint, without the secret (storing the answer for a replay would mean
storing the secret in the clear).

The event types, their descriptions and example payloads come from processors/webhook_events.py
and processors/webhook_docs.py, the same code that builds what is sent.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from msgspec import UNSET

from api.http.cursors import decode_cursor, decode_query_cursor, encode_cursor, query_hash
from api.http.docs import IdempotencyKeyHeader
from api.http.idempotency import Reply, derived_id, fingerprint, reply
from api.http.idempotency import idempotency_key as idempotency_key_of
from api.http.problems import FieldError, ProblemError, problem_responses
from api.http.services import Services
from api.http.webhook_views import (
    DeliveryCursor,
    DeliveryPage,
    DeliveryView,
    DisableRequest,
    EndpointCursor,
    RedeliverRange,
    RedeliveryCount,
    RotateSecret,
    Status,
    WebhookCreate,
    WebhookEndpointPage,
    WebhookEndpointView,
    WebhookEndpointWithSecret,
    WebhookEventTypeView,
    WebhookPatch,
    delivery_view,
    endpoint_view,
    with_secret,
)
from ledger.errors import InvalidValue
from processors import webhook_deliveries
from processors.outbound import BlockedDestination, OutboundGuard
from processors.webhook_docs import example_builtins
from processors.webhook_endpoints import EndpointSpec, WebhookEndpoints
from processors.webhook_events import EVENT_TYPES
from schema.positions import LogPosition

WRITERS = frozenset({"admin", "ops"})
EndpointId = Annotated[str, Parameter(max_length=64, pattern=r"^[0-9A-Za-z-]+$",
                                      description="The endpoint's id.")]
MAX_BIGINT = 2**63 - 1


def require_admin_or_ops(connection, _handler) -> None:  # type: ignore[no-untyped-def]
    """Guard for writes; reads are open to every key of the workspace."""
    if connection.scope.get("method") in ("GET", "HEAD"):
        return
    verified = connection.user
    if verified is None or verified.key.role not in WRITERS:
        raise ProblemError("forbidden", "only an admin or ops key may change webhooks")


def _position(value: str | None, field: str) -> LogPosition | None:
    if value is None:
        return None
    try:
        position = LogPosition.parse(value)
        if max(position.transaction_id, position.position) > MAX_BIGINT:
            raise ValueError(value)
        return position
    except ValueError:
        raise ProblemError("validation-failed", f"{field} is not a ledger position", errors=[
            FieldError(field=field, message="a position like 90771-1842")]) from None


def _not_found(endpoint_id: str) -> ProblemError:
    return ProblemError("not-found", f"no webhook endpoint {endpoint_id} in this workspace")


async def _check_destination(services: Services, workspace: str, url: str) -> None:
    try:
        await OutboundGuard(services.runtime.pool).check(workspace, url)
    except BlockedDestination as exc:
        raise ProblemError("validation-failed", f"url: {exc}", errors=[FieldError(
            field="url", message=f"{exc} (PUT /v1/outbound/allowlist allows a network)")]) from None


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ("webhooks",)
    guards = (require_admin_or_ops,)

    def _endpoints(self, services: Services) -> WebhookEndpoints:
        return WebhookEndpoints(services.runtime.pool, services.runtime.keyring)

    @get("/event-types", summary="Every webhook event type, with an example payload",
         responses=problem_responses(400, 401, 429))
    async def event_types(self) -> list[WebhookEventTypeView]:
        return [WebhookEventTypeView(type=t.type, ledger_type=t.ledger_type,
                                     description=t.description,
                                     example=example_builtins(t.ledger_type))
                for t in EVENT_TYPES]

    @post("/", status_code=HTTP_201_CREATED, summary="Add an endpoint (admin, ops)",
          description="Answers with the signing secret, once. With an `Idempotency-Key`, a "
          "retry answers with the same endpoint but without its secret (it is never stored "
          "in the clear, not even for a replay): rotate it if the first answer was lost.",
          responses=problem_responses(400, 401, 403, 409, 422, 429))
    async def create(self, request: Request, data: WebhookCreate, services: Services,
                     idempotency_key: IdempotencyKeyHeader = None
                     ) -> Response[WebhookEndpointWithSecret]:
        key = request.user.key
        spec = EndpointSpec(url=data.url, event_types=tuple(data.event_types),
                            filter=data.filter, description=data.description)
        await _check_destination(services, key.workspace, data.url)
        store = self._endpoints(services)
        idem = idempotency_key_of(request)
        if idem is None:
            created = await store.create(key.workspace, spec, key.key_id)
            assert created is not None
            return Response(with_secret(*created), status_code=HTTP_201_CREATED)
        claim = await services.idempotency.claim(key.workspace, key.key_id, idem,
                                                 await fingerprint(request))
        if isinstance(claim, Reply):
            return claim.response()  # type: ignore[return-value]
        endpoint_id = derived_id(claim.request_uuid, "webhook-endpoint")
        try:
            created = await store.create(key.workspace, spec, key.key_id,
                                         endpoint_id=endpoint_id)
            existing = None if created else await store.get(key.workspace, endpoint_id)
        except (InvalidValue, ProblemError):
            await services.idempotency.release(key.workspace, key.key_id, idem, claim,
                                               wrote=False)
            raise
        except BaseException:
            await asyncio.shield(services.idempotency.release(
                key.workspace, key.key_id, idem, claim, wrote=True))
            raise
        endpoint = created[0] if created else existing
        assert endpoint is not None
        await services.idempotency.complete(key.workspace, key.key_id, idem, claim,
                                            reply(HTTP_201_CREATED, endpoint_view(endpoint)))
        if created is None:  # created by an earlier try whose answer was lost
            earlier = endpoint_view(endpoint)
            return Response(earlier, status_code=HTTP_201_CREATED)  # type: ignore[arg-type]
        return Response(with_secret(*created), status_code=HTTP_201_CREATED)

    @get("/", summary="The workspace's endpoints", responses=problem_responses(400, 401, 429))
    async def index(
        self, request: Request, services: Services,
        cursor: Annotated[str | None, Parameter(description="next_cursor of the last page.")]
        = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> WebhookEndpointPage:
        after = decode_cursor(cursor, EndpointCursor).after_id if cursor else ""
        after = after.replace("\x00", "")
        rows = await self._endpoints(services).page(request.user.key.workspace, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return WebhookEndpointPage(
            data=[endpoint_view(e) for e in rows],
            next_cursor=encode_cursor(EndpointCursor(rows[-1].id)) if more else None,
        )

    @get("/{endpoint_id:str}", summary="One endpoint", responses=problem_responses(400, 401, 404, 429))
    async def show(self, request: Request, endpoint_id: EndpointId,
                   services: Services) -> WebhookEndpointView:
        endpoint = await self._endpoints(services).get(request.user.key.workspace, endpoint_id)
        if endpoint is None:
            raise _not_found(endpoint_id)
        return endpoint_view(endpoint)

    @patch("/{endpoint_id:str}", summary="Change an endpoint (admin, ops)",
           responses=problem_responses(400, 401, 403, 404, 422, 429))
    async def change(self, request: Request, endpoint_id: EndpointId, data: WebhookPatch,
                     services: Services) -> WebhookEndpointView:
        workspace = request.user.key.workspace
        store = self._endpoints(services)
        current = await store.get(workspace, endpoint_id)
        if current is None:
            raise _not_found(endpoint_id)
        spec = EndpointSpec(
            url=current.url if data.url is UNSET else data.url,
            event_types=current.event_types if data.event_types is UNSET
            else tuple(data.event_types),
            filter=current.filter if data.filter is UNSET else data.filter,
            description=current.description if data.description is UNSET else data.description,
        )
        if spec.url != current.url:
            await _check_destination(services, workspace, spec.url)
        updated = await store.update(workspace, endpoint_id, spec)
        if updated is None:
            raise _not_found(endpoint_id)
        return endpoint_view(updated)

    @delete("/{endpoint_id:str}", status_code=HTTP_204_NO_CONTENT,
            summary="Delete an endpoint and its delivery log (admin, ops)",
            responses=problem_responses(400, 401, 403, 404, 429))
    async def remove(self, request: Request, endpoint_id: EndpointId,
                     services: Services) -> None:
        if not await self._endpoints(services).delete(request.user.key.workspace, endpoint_id):
            raise _not_found(endpoint_id)

    @post("/{endpoint_id:str}/rotate-secret", status_code=200,
          summary="Issue a new signing secret (admin, ops)",
          description="The previous secret keeps signing too (a second signature) for "
          "`previous_valid_for_s` seconds (default 24 h). The new secret is shown once.",
          responses=problem_responses(400, 401, 403, 404, 422, 429))
    async def rotate(self, request: Request, endpoint_id: EndpointId, services: Services,
                     data: RotateSecret | None = None) -> WebhookEndpointWithSecret:
        body = data or RotateSecret()
        rotated = await self._endpoints(services).rotate(
            request.user.key.workspace, endpoint_id,
            previous_valid_s=body.previous_valid_for_s, secret=body.secret,
        )
        if rotated is None:
            raise _not_found(endpoint_id)
        return with_secret(*rotated)

    @post("/{endpoint_id:str}/enable", status_code=200, summary="Resume deliveries (admin, ops)",
          responses=problem_responses(400, 401, 403, 404, 429))
    async def enable(self, request: Request, endpoint_id: EndpointId,
                     services: Services) -> WebhookEndpointView:
        return await self._set_enabled(request, services, endpoint_id, True, None)

    @post("/{endpoint_id:str}/disable", status_code=200,
          summary="Pause deliveries (admin, ops)",
          description="Pending deliveries wait until the endpoint is enabled again; events "
          "recorded meanwhile are not queued for it.",
          responses=problem_responses(400, 401, 403, 404, 429))
    async def disable(self, request: Request, endpoint_id: EndpointId, services: Services,
                      data: DisableRequest | None = None) -> WebhookEndpointView:
        reason = (data.reason if data else None) or f"disabled by {request.user.key.key_id}"
        return await self._set_enabled(request, services, endpoint_id, False, reason)

    async def _set_enabled(self, request: Request, services: Services, endpoint_id: str,
                           enabled: bool, reason: str | None) -> WebhookEndpointView:
        endpoint = await self._endpoints(services).set_enabled(
            request.user.key.workspace, endpoint_id, enabled, reason)
        if endpoint is None:
            raise _not_found(endpoint_id)
        return endpoint_view(endpoint)

    @get("/{endpoint_id:str}/deliveries", summary="The endpoint's delivery log, newest first",
         description="Each delivery with its status and every attempt (response code, "
         "latency, error).", responses=problem_responses(400, 401, 404, 429))
    async def deliveries(
        self, request: Request, endpoint_id: EndpointId, services: Services,
        status: Annotated[Status | None, Parameter(description="Default: every status.")]
        = None,
        cursor: Annotated[str | None, Parameter(description="next_cursor of the last page.")]
        = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> DeliveryPage:
        workspace = request.user.key.workspace
        if await self._endpoints(services).get(workspace, endpoint_id) is None:
            raise _not_found(endpoint_id)
        query = query_hash("webhook-deliveries", endpoint_id, status)
        before = None
        if cursor is not None:
            decoded = decode_query_cursor(cursor, DeliveryCursor, query)
            before = min(max(decoded.before_id, 0), MAX_BIGINT)
        async with services.runtime.pool.connection() as conn:
            rows = await webhook_deliveries.page(conn, workspace, endpoint_id,
                                                 before_id=before, status=status,
                                                 limit=limit + 1)
            more = len(rows) > limit
            rows = rows[:limit]
            attempts = await webhook_deliveries.attempts_of(conn, workspace,
                                                            [d.id for d in rows])
        return DeliveryPage(
            data=[delivery_view(d, attempts[d.id]) for d in rows],
            next_cursor=encode_cursor(DeliveryCursor(query, rows[-1].id)) if more else None,
        )

    @post("/{endpoint_id:str}/deliveries/{delivery_id:int}/redeliver",
          status_code=HTTP_202_ACCEPTED, summary="Send one delivery again (admin, ops)",
          description="With the same webhook-id; the retry schedule starts again.",
          responses=problem_responses(400, 401, 403, 404, 429))
    async def redeliver_one(self, request: Request, endpoint_id: EndpointId, delivery_id: int,
                            services: Services) -> DeliveryView:
        workspace = request.user.key.workspace
        if not 0 < delivery_id <= MAX_BIGINT:
            raise ProblemError("not-found", f"no delivery {delivery_id}")
        async with services.runtime.pool.connection() as conn:
            delivery = await webhook_deliveries.redeliver_one(conn, workspace, endpoint_id,
                                                              delivery_id)
            if delivery is None:
                raise ProblemError("not-found", f"no delivery {delivery_id} of endpoint "
                                   f"{endpoint_id} in this workspace")
            attempts = await webhook_deliveries.attempts_of(conn, workspace, [delivery.id])
        return delivery_view(delivery, attempts[delivery.id])

    @post("/{endpoint_id:str}/redeliver", status_code=HTTP_202_ACCEPTED,
          summary="Send a range of deliveries again (admin, ops)",
          description="Every delivery (not pending already) of the events recorded in "
          "[`since`, `until`) and at ledger positions in (`after`, `until_position`]; none "
          "given: all of them. Same webhook-ids; in order per lead.",
          responses=problem_responses(400, 401, 403, 404, 422, 429))
    async def redeliver_range(self, request: Request, endpoint_id: EndpointId,
                              data: RedeliverRange, services: Services) -> RedeliveryCount:
        workspace = request.user.key.workspace
        if await self._endpoints(services).get(workspace, endpoint_id) is None:
            raise _not_found(endpoint_id)
        async with services.runtime.pool.connection() as conn:
            count = await webhook_deliveries.redeliver_range(
                conn, workspace, endpoint_id, since=data.since, until=data.until,
                after=_position(data.after, "after"),
                until_position=_position(data.until_position, "until_position"),
            )
        return RedeliveryCount(redelivered=count)
