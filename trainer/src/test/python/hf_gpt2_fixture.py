"""Makes the Hugging Face GPT-2 fixtures of HuggingFaceCheckpointTest with `transformers` itself:
a tiny GPT2LMHeadModel saved by save_pretrained (float32, and a bfloat16 copy), and the logits
transformers computes for fixed token windows, so the JUnit suite checks Distillery against
transformers with no Python.

    python hf_gpt2_fixture.py OUT_DIR      # made with transformers 5.17, torch 2.13 (CPU)

OUT_DIR/gpt2-tiny/, OUT_DIR/gpt2-tiny-bf16/ (config.json, model.safetensors), and
OUT_DIR/gpt2-tiny-logits.safetensors: input_ids I32 [4, 32], logits F32 [4, 32, 97] (the float32
model), logits_bf16 F32 [4, 32, 97] (the bfloat16 weights, computed in float32).
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

out = sys.argv[1]
torch.manual_seed(20261202)
cfg = GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4)
model = GPT2LMHeadModel(cfg).eval()
with torch.no_grad():   # larger weights than the 0.02 init, so the logits are far from uniform
    for name, p in model.named_parameters():
        if "ln_" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn_like(p))
        else:
            p.copy_(0.15 * torch.randn_like(p))
model.save_pretrained(os.path.join(out, "gpt2-tiny"))
ids = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(7))
with torch.no_grad():
    logits = model(ids).logits.float()
    bf16 = GPT2LMHeadModel(cfg).eval()
    bf16.load_state_dict(model.state_dict())
    bf16.to(torch.bfloat16).save_pretrained(os.path.join(out, "gpt2-tiny-bf16"))
    logits_bf16 = bf16.float()(ids).logits.float()
save_file({"input_ids": ids.int().contiguous(), "logits": logits.contiguous(), "logits_bf16": logits_bf16.contiguous()},
          os.path.join(out, "gpt2-tiny-logits.safetensors"))
print("logits std", logits.std().item(), "max |bf16 - f32|", (logits - logits_bf16).abs().max().item())
