"""A Hugging Face causal LM's top-k logits, with the full logsumexp, for a token file, as Distillery shards.
    python hf_topk_shards.py MODEL_DIR tokens.bin shards/train [k] [seq_len]   (transformers, torch, numpy)"""
import sys; sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), ".."))
import numpy as np, torch
from transformers import AutoModelForCausalLM
from distillery_shards import ShardWriter, topk_targets

model_dir, tokens, out = sys.argv[1:4]; k = int(sys.argv[4]) if len(sys.argv) > 4 else 64
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
t = int(sys.argv[5]) if len(sys.argv) > 5 else model.config.max_position_embeddings
head = np.fromfile(tokens, dtype=np.int32, count=256)                   # llm.c header: magic, version, count
ids = np.fromfile(tokens, dtype=np.uint16 if head[0] == 20240520 else np.uint32, offset=1024)[: head[2]]
windows = ids[: len(ids) // t * t].reshape(-1, t).astype(np.int64)
with ShardWriter(out, vocab_size=model.config.vocab_size, seq_len=t, targets="topk", k=k, dtype="bf16",
                 tokenizer=model_dir, teacher=model_dir,
                 tokenizer_file=next(iter(__import__("glob").glob(f"{model_dir}/tokenizer.json")), None)) as w, torch.inference_mode():
    for batch in np.array_split(windows, max(1, len(windows) // 8)):
        w.add(batch, **topk_targets(model(torch.from_numpy(batch)).logits, k=k))
