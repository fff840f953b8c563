"""``/miner_availabilities``: what each miner serves, for clients that pick miners themselves.

Answers come from the directory this worker routes by (the validator's last
poll of every miner), and need an API key: the subnet's own version of these
routes was open to anyone.

- ``POST /miner_availabilities/miner_availabilities`` with a JSON list of uids
  (or ``null``/no body for every uid) → ``{"<uid>": availability | null}``;
  ``null`` for a uid that is not on the subnet or did not answer its last poll.
- ``GET /miner_availabilities/get_available_miners?task=&model=&k=10`` → the
  uids of up to ``k`` miners that serve ``task`` and ``model`` (each optional),
  highest incentive first.
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Body, Depends, Query, Request

from shared.schemas import TASKS

from ..access import identify
from ..errors import ApiError
from ..gateway import gateway_of
from ..selection import current_directory

router = APIRouter(prefix="/miner_availabilities", tags=["miner availabilities"],
                   dependencies=[Depends(identify)])

MAX_UIDS = 4096


@router.post("/miner_availabilities")
async def miner_availabilities(request: Request,
                               uids: Optional[list[int]] = Body(None, max_length=MAX_UIDS)) -> dict:
    directory = current_directory(gateway_of(request))
    by_uid = {m.uid: m for m in directory.miners}
    wanted = uids if uids is not None else sorted(by_uid)
    return {str(uid): (by_uid[uid].availability.model_dump()
                       if uid in by_uid and by_uid[uid].availability is not None else None) for uid in wanted}


@router.get("/get_available_miners")
async def get_available_miners(request: Request, task: Optional[str] = Query(None), model: Optional[str] = Query(None),
                               k: int = Query(10, ge=1, le=MAX_UIDS)) -> list[int]:
    if task is not None and task not in TASKS:
        raise ApiError(422, f"unknown task {task!r}; one of {', '.join(TASKS)}", "invalid_request")
    directory = current_directory(gateway_of(request))
    serving = [
        m for m in directory.miners
        if m.address and m.availability is not None
        and (task is None or m.availability.task_availabilities.get(task, False))
        and (model is None or m.availability.llm_model_availabilities.get(model, False))
    ]
    serving.sort(key=lambda m: (-m.incentive, m.uid))
    return [m.uid for m in serving[:k]]
