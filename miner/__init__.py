"""The reference miner: an OpenAI-compatible ``/v1/chat/completions`` behind ``btauth/1``.

Two backends produce the text: ``builtin`` (a deterministic generator that
needs no weights, for the demo, the tests and the validator's exact-output
checks) and ``upstream`` (any OpenAI-compatible server, what a real miner
runs). ``python -m miner`` starts one; ``miner.app.create_app`` builds one.
"""
