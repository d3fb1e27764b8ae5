"""The recipes (``goldfish.experiments.Recipe``), one a file; they import the blocks of
``goldfish.experiments``, never each other."""
