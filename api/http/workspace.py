"""/v1/workspace and /v1/keys: the workspace's API policy and its API keys.

Any key may read the workspace's policy; only an admin key changes it or manages keys. An admin
manages the keys of its own workspace only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from msgspec import UNSET, Meta

from api.http.access import require_admin
from api.http.problems import ProblemError, problem_responses
from api.http.representations import SINGLE_LINE, WorkspaceSettings, WorkspaceSettingsPatch
from api.http.services import Services
from api.keys import KEY_ROLES, ApiKey

_GET = "SELECT require_if_match FROM workspace_settings WHERE workspace = %s"
_UPSERT = """
INSERT INTO workspace_settings (workspace, require_if_match) VALUES (%s, %s)
ON CONFLICT (workspace) DO UPDATE SET require_if_match = excluded.require_if_match,
                                      updated_at = now()
RETURNING require_if_match
"""


class KeyCreate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=SINGLE_LINE)]
    role: Literal[KEY_ROLES]  # type: ignore[valid-type]
    rate_limit: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None


class KeyInfo(msgspec.Struct, frozen=True):
    key_id: str
    name: str
    role: str
    rate_limit: int | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(msgspec.Struct, frozen=True):
    key: KeyInfo
    token: Annotated[str, Meta(description="The bearer key. Shown once: store it now.")]


async def _settings(services: Services, workspace: str) -> WorkspaceSettings:
    async with services.runtime.pool.connection() as conn:
        cur = await conn.execute(_GET, (workspace,))
        row = await cur.fetchone()
    return WorkspaceSettings(workspace=workspace, require_if_match=bool(row and row[0]))


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo(key.key_id, key.name, key.role, key.rate_limit, key.created_at, key.revoked_at)


class WorkspaceController(Controller):
    path = "/v1/workspace"
    tags = ["workspace"]

    @get("/", summary="The workspace's API policy", responses=problem_responses(401, 429))
    async def read(self, request: Request, services: Services) -> WorkspaceSettings:
        return await _settings(services, request.user.key.workspace)

    @patch(
        "/",
        summary="Change the workspace's API policy (admin)",
        guards=[require_admin],
        responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
    )
    async def change(
        self, request: Request, data: WorkspaceSettingsPatch, services: Services
    ) -> WorkspaceSettings:
        current = await _settings(services, request.user.key.workspace)
        require = current.require_if_match
        if data.require_if_match is not UNSET:
            require = data.require_if_match
        async with services.runtime.pool.connection() as conn:
            await conn.execute(_UPSERT, (current.workspace, require))
        return WorkspaceSettings(workspace=current.workspace, require_if_match=require)


class KeysController(Controller):
    path = "/v1/keys"
    tags = ["workspace"]
    guards = [require_admin]

    @get("/", summary="The workspace's API keys (admin)",
         responses=problem_responses(401, 403, 429))
    async def keys(self, request: Request, services: Services) -> list[KeyInfo]:
        return [_info(k) for k in await services.keys.list(request.user.key.workspace)]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Create an API key (admin)",
        description="The key's token is in the answer once and never again.",
        responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
    )
    async def create(self, request: Request, data: KeyCreate, services: Services) -> KeyCreated:
        issued = await services.keys.create(
            request.user.key.workspace, data.role, data.name, rate_limit=data.rate_limit
        )
        return KeyCreated(key=_info(issued.key), token=issued.token)

    @post(
        "/{key_id:str}/revoke",
        status_code=HTTP_200_OK,
        summary="Revoke an API key (admin)",
        description="The key fails on its next request. Revoking again changes nothing.",
        responses=problem_responses(401, 403, 404, 429),
    )
    async def revoke(
        self,
        request: Request,
        key_id: Annotated[str, Parameter(max_length=64)],
        services: Services,
    ) -> KeyInfo:
        if "\x00" in key_id:
            raise ProblemError("not-found", "no such key in this workspace")
        key = await services.keys.revoke(key_id, workspace=request.user.key.workspace)
        if key is None:
            raise ProblemError("not-found", "no such key in this workspace")
        return _info(key)
