"""mathse-rl: MathSE self-evolving reflection training as a plugin for trl and verl."""

__version__ = "0.1.0"
