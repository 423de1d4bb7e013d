# By-hand check, not a project test (our tests never need Python): reads a Distillery checkpoint the
# way Hugging Face's GPT2LMHeadModel does (Conv1D weights (in, out), gelu_new, tied head, eps from
# config.json) in float64 torch, decodes greedily from <|endoftext|> with tokenizer.json, prints the text.
# Usage: python3 hf_gpt2_greedy.py CHECKPOINT_DIR N; compare with
#   java -jar trainer.jar generate --model CHECKPOINT_DIR --tokens N --temperature 0
import json, struct, sys, torch, math
ckpt = sys.argv[1]; n = int(sys.argv[2])
cfg = json.load(open(ckpt + "/config.json"))
raw = open(ckpt + "/model.safetensors", "rb").read()
hl = struct.unpack("<Q", raw[:8])[0]; header = json.loads(raw[8:8+hl]); base = 8 + hl
W = {}
for k, v in header.items():
    if k == "__metadata__": continue
    b, e = v["data_offsets"]
    W[k] = torch.frombuffer(bytearray(raw[base+b:base+e]), dtype=torch.float32).reshape(v["shape"]).double()
assert header["__metadata__"]["format"] == "pt"
C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
def ln(x, p): return torch.nn.functional.layer_norm(x, (C,), W[p+".weight"], W[p+".bias"], cfg["layer_norm_epsilon"])
def gelu_new(x): return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
def forward(ids):
    T = len(ids); h = W["wte.weight"][ids] + W["wpe.weight"][:T]
    for l in range(L):
        p = f"h.{l}."
        a = ln(h, p+"ln_1") @ W[p+"attn.c_attn.weight"] + W[p+"attn.c_attn.bias"]
        q, k, v = a.split(C, dim=-1)
        q, k, v = [t.view(T, H, C//H).transpose(0, 1) for t in (q, k, v)]
        att = (q @ k.transpose(-1, -2)) / math.sqrt(C // H)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        h = h + y @ W[p+"attn.c_proj.weight"] + W[p+"attn.c_proj.bias"]
        m = gelu_new(ln(h, p+"ln_2") @ W[p+"mlp.c_fc.weight"] + W[p+"mlp.c_fc.bias"])
        h = h + m @ W[p+"mlp.c_proj.weight"] + W[p+"mlp.c_proj.bias"]
    return ln(h, "ln_f") @ W["wte.weight"].T
tok = json.load(open(ckpt + "/tokenizer.json"))
vocab = {i: s for s, i in tok["model"]["vocab"].items()}
bs = list(range(ord("!"), ord("~")+1)) + list(range(0xA1, 0xAC+1)) + list(range(0xAE, 0xFF+1)); cs = bs[:]; m = 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + m); m += 1
dec = {chr(c): b for b, c in zip(bs, cs)}
ids = [cfg["vocab_size"] - 1]
for _ in range(n):
    ids.append(int(forward(ids[-cfg["n_positions"]:])[-1].argmax()))
print(bytes(b for i in ids[1:] for ch in vocab[i] for b in [dec[ch]]).decode("utf-8", "replace"))
