#!/usr/bin/python3
"""PyTorch reference for src/model/llama.ts (run with Debian's /usr/bin/python3, torch 1.13).

Usage: torch_reference.py OUT_DIR

For every case it builds a tiny random checkpoint in the exact Hugging Face layout
(OUT_DIR/<case>/config.json + model.safetensors, written by hand: 8-byte little-endian header
length, JSON header, raw little-endian tensor bytes), a packed batch of two sequences plus one
padding token, and a LoRA adapter with nonzero B. It runs the model written from the HF Llama
definition (rotate_half RoPE with HF's fp32 cos/sin, repeat_kv, causal + packing mask, RMSNorm,
SiLU-gated MLP, shifted-label cross entropy already applied in `targets`) in float64 with
autograd, and writes OUT_DIR/<case>/expected.json + expected.bin:
  - logits_base / loss_base: no adapter
  - logits_lora / loss_lora: with the adapter (dropout 0)
  - grad.<key>.lora_A / grad.<key>.lora_B: d(loss_lora)/d(A, B)
  - lora.<key>.lora_A / lora.<key>.lora_B: the adapter weights (fp32)
  - fullgrad.<tensor name>: d(loss_base)/d(every checkpoint tensor) (full-parameter training)
"""

import json
import math
import os
import struct
import sys

try:
    import torch
except ImportError:  # the TS test turns this exit code into a clear failure
    sys.stderr.write("helora reference: PyTorch is not installed for /usr/bin/python3 (apt install python3-torch)\n")
    sys.exit(3)

IGNORE = -100


def write_safetensors(path, tensors):
    """tensors: list of (name, torch tensor in float32 or bfloat16)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        t = t.contiguous()
        if t.dtype == torch.float32:
            dtype, raw = "F32", t.numpy().astype("<f4").tobytes()
        elif t.dtype == torch.bfloat16:
            dtype, raw = "BF16", t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raise ValueError(t.dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ------------------------------------------------------------------------------------------
# RoPE exactly as transformers computes it (fp32 inv_freq, fp32 angles).

def rope_inv_freq(cfg):
    dim, base = cfg["head_dim"], cfg["rope_theta"]
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    sc = cfg.get("rope_scaling")
    if not sc:
        return inv
    kind = sc.get("rope_type", sc.get("type"))
    if kind == "linear":
        return inv / sc["factor"]
    assert kind == "llama3"
    factor, low, high, old = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"], sc["original_max_position_embeddings"]
    low_wl, high_wl = old / low, old / high
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_wl, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
    return torch.where(medium, smoothed, inv_l)


def cos_sin(cfg, positions):
    inv = rope_inv_freq(cfg)
    freqs = (inv[:, None].float() @ positions[None, :].float()).t()  # [T, hd/2], fp32
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().double(), emb.sin().double()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


MODULES = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj", "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj",
}


def model_forward(cfg, W, batch, lora):
    """W: name -> float64 tensor. lora: None or dict(scale, pairs: key -> (A, B))."""
    T = len(batch["tokens"])
    nH, nKv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    tokens = torch.tensor(batch["tokens"])
    positions = torch.tensor(batch["positions"])
    seq = torch.tensor(batch["seqIds"])
    cos, sin = cos_sin(cfg, positions)
    idx = torch.arange(T)
    allowed = (idx[None, :] <= idx[:, None]) & (seq[None, :] == seq[:, None])
    mask = torch.zeros(T, T, dtype=torch.float64).masked_fill(~allowed, float("-inf"))

    def lin(l, mod, x):
        p = "model.layers.%d.%s" % (l, MODULES[mod])
        y = x @ W[p + ".weight"].t()
        if (p + ".bias") in W:
            y = y + W[p + ".bias"]
        if lora is not None:
            key = "layers.%d.%s" % (l, MODULES[mod])
            if key in lora["pairs"]:
                A, B = lora["pairs"][key]
                y = y + lora["scale"] * ((x @ A.t()) @ B.t())
        return y

    x = W["model.embed_tokens.weight"][tokens]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = lin(l, "q_proj", h).view(T, nH, hd).transpose(0, 1)
        k = lin(l, "k_proj", h).view(T, nKv, hd).transpose(0, 1)
        v = lin(l, "v_proj", h).view(T, nKv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nH // nKv  # repeat_kv: head h reads kv head h // rep
        k = k[:, None].expand(nKv, rep, T, hd).reshape(nH, T, hd)
        v = v[:, None].expand(nKv, rep, T, hd).reshape(nH, T, hd)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1) @ v
        x = x + lin(l, "o_proj", att.transpose(0, 1).reshape(T, nH * hd))
        h2 = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        m = torch.nn.functional.silu(lin(l, "gate_proj", h2)) * lin(l, "up_proj", h2)
        x = x + lin(l, "down_proj", m)
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    logits = x @ head.t()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(batch["targets"]), ignore_index=IGNORE)
    return logits, loss


# ------------------------------------------------------------------------------------------

def make_weights(cfg, gen, dtype):
    h, m, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nH, nKv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    bias = cfg["model_type"] == "qwen2"

    def r(*shape, scale):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    def norm_w(n):
        return (1 + 0.2 * torch.randn(n, generator=gen)).to(dtype)

    t = [("model.embed_tokens.weight", r(v, h, scale=1.0))]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        t.append((p + "self_attn.q_proj.weight", r(nH * hd, h, scale=h ** -0.5)))
        t.append((p + "self_attn.k_proj.weight", r(nKv * hd, h, scale=h ** -0.5)))
        t.append((p + "self_attn.v_proj.weight", r(nKv * hd, h, scale=h ** -0.5)))
        if bias:
            t.append((p + "self_attn.q_proj.bias", r(nH * hd, scale=0.3)))
            t.append((p + "self_attn.k_proj.bias", r(nKv * hd, scale=0.3)))
            t.append((p + "self_attn.v_proj.bias", r(nKv * hd, scale=0.3)))
        t.append((p + "self_attn.o_proj.weight", r(h, nH * hd, scale=(nH * hd) ** -0.5)))
        t.append((p + "mlp.gate_proj.weight", r(m, h, scale=h ** -0.5)))
        t.append((p + "mlp.up_proj.weight", r(m, h, scale=h ** -0.5)))
        t.append((p + "mlp.down_proj.weight", r(h, m, scale=m ** -0.5)))
        t.append((p + "input_layernorm.weight", norm_w(h)))
        t.append((p + "post_attention_layernorm.weight", norm_w(h)))
    t.append(("model.norm.weight", norm_w(h)))
    if not cfg["tie_word_embeddings"]:
        t.append(("lm_head.weight", r(v, h, scale=h ** -0.5)))
    return t


def make_batch(v, gen):
    """Two packed sequences (7 and 6 tokens) and one padding token; a prompt token is ignored."""
    a = torch.randint(0, v, (7,), generator=gen).tolist()
    b = torch.randint(0, v, (6,), generator=gen).tolist()
    tokens = a + b + [0]
    targets = a[1:] + [IGNORE] + b[1:] + [IGNORE] + [IGNORE]
    targets[0] = IGNORE  # a prompt token that is not trained on
    positions = list(range(7)) + list(range(6)) + [0]
    seq = [0] * 7 + [1] * 6 + [2]
    return {"tokens": tokens, "targets": targets, "positions": positions, "seqIds": seq}


BASE = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 61, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "rope_scaling": None, "max_position_embeddings": 64, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
}

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES = [
    ("llama_gqa", {}, torch.float32, ALL),
    ("llama3_rope_tied", {"rope_theta": 500000.0, "tie_word_embeddings": True, "head_dim": 16, "hidden_size": 48,
                          "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 16}}, torch.float32, ALL),
    ("qwen2_bias", {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_key_value_heads": 1, "rope_theta": 1000000.0,
                    "rms_norm_eps": 1e-6, "tie_word_embeddings": True}, torch.float32, ["q_proj", "v_proj", "down_proj"]),
    ("tinyllama_untied", {"num_attention_heads": 8, "num_key_value_heads": 4, "hidden_size": 64,
                          "rope_scaling": {"type": "linear", "factor": 2.0}}, torch.float32, ALL),
    ("bf16_storage", {"torch_dtype": "bfloat16"}, torch.bfloat16, ["k_proj", "o_proj", "gate_proj", "up_proj"]),
]


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    for ci, (name, over, dtype, targets) in enumerate(CASES):
        cfg = dict(BASE)
        cfg.update(over)
        json_cfg = dict(cfg)
        cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        gen = torch.Generator().manual_seed(1000 + ci)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(json_cfg, f, indent=2)
        tensors = make_weights(cfg, gen, dtype)
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)
        W = {n: t.double() for n, t in tensors}  # exactly the stored (possibly bf16-rounded) values
        batch = make_batch(cfg["vocab_size"], gen)

        rank, alpha = 4, 8.0
        h, m = cfg["hidden_size"], cfg["intermediate_size"]
        qd, kvd = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
        dims = {"q_proj": (qd, h), "k_proj": (kvd, h), "v_proj": (kvd, h), "o_proj": (h, qd),
                "gate_proj": (m, h), "up_proj": (m, h), "down_proj": (h, m)}
        pairs = {}
        for l in range(cfg["num_hidden_layers"]):
            for mod in targets:
                o, i = dims[mod]
                A = (torch.rand(rank, i, generator=gen) * 2 - 1) / math.sqrt(i)
                B = torch.randn(o, rank, generator=gen) * 0.2
                pairs["layers.%d.%s" % (l, MODULES[mod])] = (A.float().double().requires_grad_(), B.float().double().requires_grad_())
        lora = {"scale": alpha / rank, "pairs": pairs}

        with torch.no_grad():
            logits_base, loss_base = model_forward(cfg, W, batch, None)
        # Full-parameter training: d(loss_base)/d(every weight), tied embeddings counted once.
        Wg = {n: t.clone().requires_grad_() for n, t in W.items()}
        _, loss_full = model_forward(cfg, Wg, batch, None)
        loss_full.backward()
        logits_lora, loss_lora = model_forward(cfg, W, batch, lora)
        loss_lora.backward()

        blobs, index, offset = [], {}, 0

        def put(key, t):
            nonlocal offset
            a = t.detach().float().contiguous().numpy().astype("<f4")
            index[key] = {"offset": offset, "shape": list(t.shape)}
            blobs.append(a.tobytes())
            offset += a.size

        put("logits_base", logits_base)
        for n, t in Wg.items():
            put("fullgrad.%s" % n, t.grad)
        put("logits_lora", logits_lora)
        for key, (A, B) in pairs.items():
            put("lora.%s.lora_A" % key, A)
            put("lora.%s.lora_B" % key, B)
            put("grad.%s.lora_A" % key, A.grad)
            put("grad.%s.lora_B" % key, B.grad)
        with open(os.path.join(d, "expected.bin"), "wb") as f:
            for b in blobs:
                f.write(b)
        meta = {"batch": batch, "loss_base": loss_base.item(), "loss_lora": loss_lora.item(),
                "lora": {"rank": rank, "alpha": alpha, "targetModules": targets, "keys": list(pairs.keys())},
                "tensors": index}
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(meta, f)
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump([c[0] for c in CASES], f)


if __name__ == "__main__":
    main()
