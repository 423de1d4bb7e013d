"""By-hand check with the real `transformers` (not a project test: the tests never need Python).
Opens a Distillery checkpoint folder (GPT-2 or Llama family) with AutoModelForCausalLM and
AutoTokenizer and checks that
  1. no weight is missing or unexpected;
  2. its logits equal Distillery's (`teacher dump-logits --targets dense --dtype f32`) within 1e-4
     on the first two windows of a token file;
  3. its greedy `generate` from the start token (GPT-2: end-of-text; Llama family: BOS) gives the
     text that `trainer.jar generate --temperature 0` gives;
  4. AutoTokenizer loads the checkpoint's tokenizer.json and round-trips that text.

    python bench/reference/hf_open_student.py --jar trainer/target/trainer.jar CHECKPOINT TOKENS.bin

Needs transformers 5.x and torch 2.x (pip install --no-index --find-links DIR transformers torch).
"""
import argparse
import os
import subprocess
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--jar", required=True)
ap.add_argument("--java", default=os.path.join(os.environ.get("JAVA_HOME", "/usr/lib/jvm/temurin-25-jdk-amd64"), "bin", "java"))
ap.add_argument("--tokens", type=int, default=40)
ap.add_argument("checkpoint")
ap.add_argument("token_file")
a = ap.parse_args()

model, info = AutoModelForCausalLM.from_pretrained(a.checkpoint, output_loading_info=True, dtype=torch.float32)
model.eval()
bad = {k: v for k, v in info.items() if v}
print(f"0. {type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters")
print("1. loading info:", "no missing, unexpected or mismatched keys" if not bad else bad)

work = tempfile.mkdtemp(prefix="hf-open-")
shards = os.path.join(work, "shards")
subprocess.run([a.java, "-jar", a.jar, "teacher", "dump-logits", "--teacher", a.checkpoint, "--tokens", a.token_file, "--out", shards,
                "--targets", "dense", "--dtype", "f32", "--max-sequences", "2", "--device", "cpu"], check=True, capture_output=True)
shard = load_file(os.path.join(shards, sorted(f for f in os.listdir(shards) if f.endswith(".safetensors"))[0]))
with torch.no_grad():
    ours = torch.from_numpy(shard["logits"])
    theirs = model(torch.from_numpy(shard["input_ids"].astype(np.int64))).logits
diff = (ours - theirs).abs().max().item()
print(f"2. logits on {tuple(ours.shape)}: max |Distillery - transformers| = {diff:.2e}", "(within 1e-4)" if diff < 1e-4 else "(TOO LARGE)")

tok = AutoTokenizer.from_pretrained(a.checkpoint)
eos = tok.eos_token_id
start = tok.bos_token_id if model.config.model_type != "gpt2" and tok.bos_token_id is not None else eos
with torch.no_grad():
    out = model.generate(torch.tensor([[start]]), max_new_tokens=a.tokens, do_sample=False, pad_token_id=eos, min_new_tokens=a.tokens)
text_hf = tok.decode(out[0, 1:].tolist())
ours_text = subprocess.run([a.java, "-jar", a.jar, "generate", "--model", a.checkpoint, "--tokens", str(a.tokens), "--temperature", "0",
                            "--device", "cpu"], check=True, capture_output=True, text=True).stdout
ours_text = "\n".join(l for l in ours_text.rsplit("\n(", 1)[0].split("\n") if not l.startswith("device: ")).strip("\n")
print("3. greedy generate:", "identical text" if ours_text == text_hf else f"DIFFERENT\n   transformers: {text_hf!r}\n   Distillery:   {ours_text!r}")
print(f"   {text_hf[:100]!r}")
ids = tok.encode(text_hf, add_special_tokens=False)
print(f"4. AutoTokenizer: {type(tok).__name__}, vocab {len(tok)}, round trip", "exact" if tok.decode(ids) == text_hf else "DIFFERENT")
