"""Users: who the caller is, and the named API tokens an admin adds, lists and revokes (each with a
role: admin, member or viewer; shown once, stored as a SHA-256 hash)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, Depends

from fakefinder.platform.paths import NotFound, RequestError
from fakefinder.platform.routes.common import Caller, Services, needs, services
from fakefinder.platform.store import ROLES

router = APIRouter()
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def check_token_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RequestError(
            "name: 1 to 64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit", "name"
        )
    return name


@router.get("/api/me", tags=["users"])
def me(who: Caller = Depends(needs("viewer"))) -> dict:
    """Who the token in this request belongs to, and its role."""
    return {"name": who.name, "role": who.role}


@router.get("/api/tokens", tags=["users"])
def list_tokens(
    revoked: bool = False, svc: Services = Depends(services), who: Caller = Depends(needs("admin"))
) -> dict:
    """The named tokens (never the tokens themselves): name, role, when made and by whom, last use;
    `revoked=true` lists revoked ones too."""
    return {"tokens": svc.store.tokens(include_revoked=revoked)}


@router.post("/api/tokens", tags=["users"], status_code=201)
def add_token(
    body: dict[str, Any] = Body(..., examples=[{"name": "alice", "role": "member"}]),
    svc: Services = Depends(services),
    who: Caller = Depends(needs("admin")),
) -> dict:
    """A new token for `name` with `role` (admin, member or viewer). The answer is the only time the
    token is shown; the server keeps its SHA-256 hash."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", "body")
    name = check_token_name(body.get("name"))
    role = body.get("role", "member")
    if role not in ROLES:
        raise RequestError(f"role: one of {', '.join(ROLES)}", "role")
    extra = sorted(set(body) - {"name", "role"})
    if extra:
        raise RequestError(f"{extra[0]}: not a field of a token (name, role)", extra[0])
    token = svc.store.add_token(name, role, created_by=who.name)
    return {"name": name, "role": role, "token": token}


@router.delete("/api/tokens/{name}", tags=["users"])
def revoke_token(name: str, svc: Services = Depends(services), who: Caller = Depends(needs("admin"))) -> dict:
    """Revoke the token named `name`: every request with it is refused (401) from now on."""
    if not svc.store.revoke_token(name):
        raise NotFound(f"no active token named {name!r}", "name")
    return {"revoked": name}
