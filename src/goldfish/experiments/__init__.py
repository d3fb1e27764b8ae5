"""Recipes: the embedded corpus and tiny models, and the experiments that reproduce the paper."""
