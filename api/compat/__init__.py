"""Routes for clients written against other gateways, each a thin adapter over the chat core.

- ``btvep``: ``POST /chat`` (Endpoint-Version 2023-05-19, ``choices[].responder_hotkey``);
- ``llama_cpp``: ``POST /completion`` (``prompt``, ``n_predict``, ``content``);
- ``unify``: ``GET /get_credits`` (``model@provider`` is ``api.model_names``);
- ``not_found``: the 404 for every other path, naming the closest route.

docs/compatibility.md says what each client gets.
"""

from . import btvep, llama_cpp, unify

routers = (btvep.router, llama_cpp.router, unify.router)
