"""The accuracy search lossy passes share: candidates of a model, their output error on fixed
feeds (``errors``), a bound on it (``bound``), ranking what to change by the error each change
causes and finding the fewest changes to undo so the bound holds (``ranking``)."""
