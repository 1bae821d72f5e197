"""Experiments: a grid of ordinary training runs (arms x seeds x datasets x splits), scored on their test splits
and on retention sets, and the report with paired statistics built from them."""

from .grid import Cell, Grid, GridError, load_grid
from .runner import run_experiment

__all__ = ["Cell", "Grid", "GridError", "load_grid", "run_experiment"]
