"""Framework adapters. Each subpackage imports its framework lazily; the core never does."""
