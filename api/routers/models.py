"""``GET /v1/models``: the models that available miners serve, in OpenAI's list shape.

A model is listed while at least one miner that the validator found available
advertises it; ``miners`` says how many. ``GET /v1/models/{id}`` answers one
model or 404 in OpenAI's shape. A chat request naming one of these models is
routed only to miners that serve it. The deployment's ``MODEL_ALIASES`` are listed
too, each with ``alias_of``, while the model they name is served.
"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends, Request

from shared.schemas import Directory

from ..access import identify
from ..errors import ApiError
from ..gateway import gateway_of
from ..model_names import parse_aliases
from ..selection import current_directory

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(identify)])


def served_models(directory: Directory) -> Counter:
    counts: Counter = Counter()
    for miner in directory.miners:
        if miner.address and miner.availability is not None:
            counts.update(m for m, ok in miner.availability.llm_model_availabilities.items() if ok)
    return counts


def model_object(model: str, miners: int, netuid: int) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": f"subnet-{netuid}", "miners": miners}


def alias_objects(request: Request, counts: Counter, netuid: int) -> dict[str, dict]:
    """The aliases whose model is served, as model objects that say what they stand for."""
    aliases = parse_aliases(gateway_of(request).settings.model_aliases)
    return {alias: {**model_object(alias, counts[target], netuid), "alias_of": target}
            for alias, target in aliases.items() if target is not None and counts.get(target)}


@router.get("")
async def list_models(request: Request) -> dict:
    directory = current_directory(gateway_of(request))
    counts = served_models(directory)
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return {"object": "list", "data": [*(model_object(m, n, directory.netuid) for m, n in ordered),
                                       *alias_objects(request, counts, directory.netuid).values()]}


@router.get("/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict:
    directory = current_directory(gateway_of(request))
    counts = served_models(directory)
    alias = alias_objects(request, counts, directory.netuid).get(model)
    if alias is not None:
        return alias
    miners = counts.get(model, 0)
    if not miners:
        raise ApiError(404, f"no available miner serves model {model!r}", "model_not_found")
    return model_object(model, miners, directory.netuid)
