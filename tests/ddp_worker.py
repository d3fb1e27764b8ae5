"""Run by test_ddp_*: GoldfishTrainer on a fixed global batch of 4, as 1 process x 4 or 2 x 2 (gloo).

Step 2 of 3 has a global batch whose second half supervises nothing, so under DDP one rank's
micro-batch is fully masked: its zero loss must still join the gradient all-reduce (no hang).
Usage: python ddp_worker.py OUT PER_DEVICE_BATCH
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import micro_model, seq2seq_collator, sgd_args, text_examples  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from goldfish import GoldfishConfig  # noqa: E402
from goldfish.distributed import close_process_group  # noqa: E402
from goldfish.embedded.tiny import load_embedded_tokenizer  # noqa: E402
from goldfish.integrations.hf import GoldfishCollator, GoldfishTrainer  # noqa: E402


class RecordLoss(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def main(out: str, per_device: int) -> None:
    tokenizer = load_embedded_tokenizer()
    data = text_examples(tokenizer, n=12, length=60, prompt=3)
    for ex in data[6:8]:  # global batch 2 (examples 4..7): the second half supervises nothing
        ex["labels"] = [-100] * len(ex["labels"])
    cfg = GoldfishConfig(k=3)
    model = micro_model(tokenizer)
    record = RecordLoss()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = sgd_args(out, per_device, steps=3, logging_steps=1, ddp_backend="gloo" if world > 1 else None)
    trainer = GoldfishTrainer(model=model, args=args, train_dataset=data, data_collator=GoldfishCollator(seq2seq_collator(tokenizer), cfg), callbacks=[record])
    trainer.train()
    if trainer.is_world_process_zero():
        masked = GoldfishCollator(seq2seq_collator(tokenizer), cfg)(data[:4])["labels"]
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save({"world_size": world, "losses": record.losses, "masked_labels": masked,
                    "weights": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}}, Path(out) / "result.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    close_process_group()  # as the CLI does: every rank exits
