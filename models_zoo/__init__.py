"""Model builders with deterministic weights, and small trained models with their evaluation data."""
