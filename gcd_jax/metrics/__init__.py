"""Evaluation metrics; each module is small and tested on its own."""
