"""Experiment drivers: grids of normal training runs, evaluated and reported (`paper_claim`)."""
