"""Training data: sources (Arrow datasets), tokenization in TRL's formats with assistant-only chat
labels on any template, chunking, packing, and the cached parallel preparation."""

from goldfish.data.chat import IGNORE_INDEX, chat_labels
from goldfish.data.sources import load_source, read_documents
from goldfish.data.tokenize import (
    build_examples,
    document_format,
    document_k,
    fit_document,
    pack_examples,
    tokenize_document,
)

__all__ = ["IGNORE_INDEX", "build_examples", "chat_labels", "document_format", "document_k", "fit_document",
           "load_source", "pack_examples", "read_documents", "tokenize_document"]
