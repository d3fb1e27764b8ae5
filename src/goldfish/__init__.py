"""goldfish: train causal LMs without verbatim memorization (the goldfish loss), and audit them."""

from goldfish.config import GoldfishConfig
from goldfish.hashing import HASH_VERSION
from goldfish.loss import causal_lm_loss, goldfish_loss, supervised_logits_loss
from goldfish.documents import document_starts
from goldfish.mask import apply_goldfish, goldfish_mask
from goldfish.protect import PROTECT_VERSION

__version__ = "0.1.0"

__all__ = [
    "HASH_VERSION",
    "PROTECT_VERSION",
    "GoldfishConfig",
    "apply_goldfish",
    "causal_lm_loss",
    "document_starts",
    "goldfish_loss",
    "goldfish_mask",
    "supervised_logits_loss",
]
