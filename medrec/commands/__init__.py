"""Sub-commands of the medrec CLI; each module exposes ``register(app)``."""

