"""Code that both the validator and the API workers use.

Only four things live here: the settings base, request signing (``btauth/1``),
the wire schemas that cross process boundaries, and the chain interface.
Nothing in ``api/`` imports from ``validator/`` or back; they meet here.
"""
