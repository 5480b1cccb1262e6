"""The study plan's "modifications to try", as reproducible experiments."""
