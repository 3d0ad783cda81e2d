"""Recipes, dataset I/O, executors and the `dj-run` command line."""
