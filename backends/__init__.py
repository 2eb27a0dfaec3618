"""Backend lowerers: one module per target, and the Backend protocol."""
