"""``POST /web_retrieval`` as every version of the subnet's API took it.

Today's clients send a JSON body (``{"search_query": …, "n_miners": …, "uids": […]}``);
older scripts put the fields in the query string (``?search_query=…&n_miners=1``)
and the uids in the body as ``target_uids`` (a list of ints or numeric strings),
or the body as that bare list. All of these are merged here, the body over the
query string, into one ``WebRetrievalQuery``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import ApiError, describe_validation_errors
from ..web_retrieval import WebRetrievalQuery

LIST_FIELDS = ("uids", "target_uids")


def merged_query(query_params: Any, body: Any) -> WebRetrievalQuery:
    """``query_params``: Starlette's ``QueryParams``; ``body``: the parsed JSON body or None."""
    fields: dict[str, Any] = {}
    for name, value in query_params.multi_items():
        if name in LIST_FIELDS:
            fields.setdefault("uids", []).append(value)
        else:
            fields[name] = value
    if isinstance(body, list):
        body = {"target_uids": body}
    if body is not None and not isinstance(body, dict):
        raise ApiError(422, "invalid request: body: expected a JSON object (or a list of uids)", "invalid_request")
    for name, value in (body or {}).items():
        fields["uids" if name in LIST_FIELDS else name] = value
    if fields.get("uids") is not None:
        uids = fields["uids"] if isinstance(fields["uids"], list) else [fields["uids"]]
        fields["uids"] = [str(uid) if isinstance(uid, int) else uid for uid in uids] or None
    try:
        return WebRetrievalQuery.model_validate(fields)
    except ValidationError as exc:
        raise ApiError(422, describe_validation_errors(exc.errors()), "invalid_request") from None
