"""Run by test_fsdp_*: three SGD steps of the goldfish loss on a global batch of 4 rows, either in
one process or as 2 ranks under FSDP2 (``torch.distributed.fsdp.fully_shard``, gloo, CPU), with the
LM head in tiles of kept positions (``supervised_logits_loss``, the hook GoldfishTrainer uses) or
with full logits (the reference). accelerate enables FSDP only on accelerators, so this drives
torch's FSDP2 directly. With an untied head, lm_head is sharded as its own FSDP unit (gathered only
during its forward); a tied head is sharded with the embeddings in the root unit; lora-head puts
PEFT LoRA on q_proj, v_proj and the (untied, own-unit) lm_head.
Usage: python fsdp_worker.py OUT tiled|full tied|untied|lora-head
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from helpers import micro_model, seq2seq_collator, text_examples  # noqa: E402

from goldfish import GoldfishConfig, causal_lm_loss  # noqa: E402
from goldfish.embedded.tiny import load_embedded_tokenizer  # noqa: E402
from goldfish.distributed import close_process_group  # noqa: E402
from goldfish.integrations.hf import GoldfishCollator  # noqa: E402
from goldfish.loss import supervised_logits_loss, supervised_targets  # noqa: E402


def main(out: str, head: str, tying: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    tokenizer = load_embedded_tokenizer()
    data = text_examples(tokenizer, n=4, length=60, prompt=3)
    batch = GoldfishCollator(seq2seq_collator(tokenizer), GoldfishConfig(k=3))(data)
    model = micro_model(tokenizer, tie_word_embeddings=tying == "tied")
    if tying == "lora-head":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"],
                                                 init_lora_weights=False))
    base = model.get_base_model() if tying == "lora-head" else model
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        for layer in base.model.layers:
            fully_shard(layer)
        if tying != "tied":
            fully_shard(base.lm_head)
        fully_shard(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05 if tying == "lora-head" else 0.5)
    rows = slice(rank * 4 // world, (rank + 1) * 4 // world)
    n_global = supervised_targets(batch["labels"]).numel()
    losses = []
    ids, labels, attention_mask = batch["input_ids"][rows], batch["labels"][rows], batch["attention_mask"][rows]
    for _ in range(3):
        if head == "tiled":
            loss = supervised_logits_loss(model, ids, labels, attention_mask=attention_mask, num_items_in_batch=n_global, tile_size=16)
        else:
            loss = causal_lm_loss(model(input_ids=ids, attention_mask=attention_mask).logits, labels, num_items_in_batch=n_global)
        (loss * world).backward()  # FSDP averages gradients over ranks; the loss is already a share of the global mean
        optimizer.step()
        optimizer.zero_grad()
        total = loss.detach().clone()
        if world > 1:
            dist.all_reduce(total)
        losses.append(float(total))
    weights = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}
    sharded = {n: type(p).__name__ == "DTensor" for n, p in model.named_parameters()}
    if rank == 0:
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save({"world_size": world, "sharded": sharded, "losses": losses, "weights": weights}, Path(out) / "result.pt")


if __name__ == "__main__":
    main(*sys.argv[1:4])
    close_process_group()  # as the CLI does, once the model's last references are gone: every rank exits
