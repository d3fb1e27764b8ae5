"""Run by test_fsdp_*: three SGD steps of the goldfish loss with the LM head built only at kept
positions, on a global batch of 4 rows, either in one process or as 2 ranks under FSDP2
(``torch.distributed.fsdp.fully_shard``, gloo, CPU). accelerate enables FSDP only on accelerators,
so this drives torch's FSDP2 directly, with the same forward hook GoldfishTrainer uses.
Usage: python fsdp_worker.py OUT
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from helpers import micro_model, seq2seq_collator, text_examples  # noqa: E402

from goldfish import GoldfishConfig  # noqa: E402
from goldfish.embedded.tiny import load_embedded_tokenizer  # noqa: E402
from goldfish.integrations.hf import GoldfishCollator  # noqa: E402
from goldfish.loss import supervised_logits_loss, supervised_targets  # noqa: E402


def main(out: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    tokenizer = load_embedded_tokenizer()
    data = text_examples(tokenizer, n=4, length=60, prompt=3)
    batch = GoldfishCollator(seq2seq_collator(tokenizer), GoldfishConfig(k=3))(data)
    model = micro_model(tokenizer)
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    rows = slice(rank * 4 // world, (rank + 1) * 4 // world)
    n_global = supervised_targets(batch["labels"]).numel()
    losses = []
    for _ in range(3):
        loss = supervised_logits_loss(model, batch["input_ids"][rows], batch["labels"][rows],
                                      attention_mask=batch["attention_mask"][rows], num_items_in_batch=n_global)
        (loss * world).backward()  # FSDP averages gradients over ranks; the loss is already a share of the global mean
        optimizer.step()
        optimizer.zero_grad()
        total = loss.detach().clone()
        if world > 1:
            dist.all_reduce(total)
        losses.append(float(total))
    weights = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}
    sharded = any(type(p).__name__ == "DTensor" for p in model.parameters())
    if rank == 0:
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save({"world_size": world, "sharded": sharded, "losses": losses, "weights": weights}, Path(out) / "result.pt")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
