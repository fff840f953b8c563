"""The public API process: OpenAI-compatible, stateless, any number of workers."""
