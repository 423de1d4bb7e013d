"""Makes the Llama-family fixtures of HuggingFaceLlamaTest with `transformers` itself: a tiny
LlamaForCausalLM (grouped-query attention, Llama 3's rope_scaling, untied head) and a tiny
Qwen2ForCausalLM (q/k/v biases, tied head), saved by save_pretrained, with the logits
transformers computes for fixed token windows.

    python hf_llama_fixture.py OUT_DIR      # made with transformers 5.17, torch 2.13 (CPU)

OUT_DIR/llama-tiny/, OUT_DIR/qwen2-tiny/ (config.json, model.safetensors) and
OUT_DIR/llama-tiny-logits.safetensors: input_ids I32 [3, 24], llama F32 [3, 24, 97], qwen2 F32 [3, 24, 97].
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

out = sys.argv[1]
torch.manual_seed(20261202)


def widen(model):
    """Weights larger than the 0.02 init, so the logits are far from uniform."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1 + 0.2 * torch.randn_like(p)) if "norm" in name else 0.15 * torch.randn_like(p))
    return model.eval()


llama = widen(LlamaForCausalLM(LlamaConfig(
    vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16})))
qwen = widen(Qwen2ForCausalLM(Qwen2Config(
    vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
    max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True)))
llama.save_pretrained(os.path.join(out, "llama-tiny"))
qwen.save_pretrained(os.path.join(out, "qwen2-tiny"))
ids = torch.randint(0, 97, (3, 24), generator=torch.Generator().manual_seed(11))
with torch.no_grad():
    save_file({"input_ids": ids.int().contiguous(), "llama": llama(ids).logits.float().contiguous(),
               "qwen2": qwen(ids).logits.float().contiguous()}, os.path.join(out, "llama-tiny-logits.safetensors"))
print(open(os.path.join(out, "llama-tiny", "config.json")).read())
from safetensors import safe_open
for m in ("llama-tiny", "qwen2-tiny"):
    with safe_open(os.path.join(out, m, "model.safetensors"), "pt") as f:
        print(m, sorted(f.keys())[:14], len(f.keys()))
