"""Judge backends, registered by name: ``local`` (a transformers model), ``openai`` (an
OpenAI-compatible endpoint) and ``verifier`` (the rule verifier with step heuristics)."""
