"""The library's embedded defaults, below everything that uses them: the corpus built from text that
ships with CPython, the BPE tokenizer trained on it, and tiny Llama configs (``embedded:PART`` data,
``--init tiny``). Nothing here imports from ``goldfish.experiments``."""
