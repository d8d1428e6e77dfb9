"""Self-supervised objectives; each composes data and models."""
