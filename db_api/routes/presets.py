"""Presets ("roles"): a person's named system prompt, model and sampling settings."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from db_api import crud
from db_api.routes import deps
from db_api.schemas import PresetCreate, PresetOut, PresetUpdate, check_limits

router = deps.owner_scoped_router("presets")

NOT_FOUND = deps.answers(404, "No such preset for this owner")
NAME_TAKEN = deps.answers(409, "The owner has a preset of that name already")


@router.get("/presets", response_model=list[PresetOut])
def list_presets(
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[PresetOut]:
    """The owner's presets by name."""
    presets = crud.list_presets(session, owner, limit=limit, offset=offset)
    return [PresetOut.model_validate(p) for p in presets]


@router.post(
    "/presets",
    status_code=status.HTTP_201_CREATED,
    response_model=PresetOut,
    responses={**deps.BODY_RESPONSES, **NAME_TAKEN},
)
def create_preset(
    body: PresetCreate, owner: deps.OwnerDep, session: deps.SessionDep, settings: deps.SettingsDep
) -> PresetOut:
    check_limits(body, settings)
    fields = {**body.model_dump(exclude={"params"}), "params": body.params.stored()}
    preset = crud.create_preset(session, owner, fields)
    return PresetOut.model_validate(preset)


@router.get("/presets/{preset_id}", response_model=PresetOut, responses=NOT_FOUND)
def get_preset(preset_id: uuid.UUID, owner: deps.OwnerDep, session: deps.SessionDep) -> PresetOut:
    return PresetOut.model_validate(crud.get_preset(session, owner, preset_id))


@router.patch(
    "/presets/{preset_id}",
    response_model=PresetOut,
    responses={**NOT_FOUND, **deps.BODY_RESPONSES, **NAME_TAKEN},
)
def update_preset(
    preset_id: uuid.UUID,
    body: PresetUpdate,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    settings: deps.SettingsDep,
) -> PresetOut:
    """Change the fields sent (null clears system_prompt or model; params replaces the
    settings as a whole)."""
    preset = crud.update_preset(session, owner, preset_id, body.changes(settings))
    return PresetOut.model_validate(preset)


@deps.deletes(router, "/presets/{preset_id}", NOT_FOUND)
def delete_preset(preset_id: uuid.UUID, owner: deps.OwnerDep, session: deps.SessionDep) -> None:
    crud.delete_preset(session, owner, preset_id)
