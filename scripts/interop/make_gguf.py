"""Write a small GGUF file with llama.cpp's own Python writer (gguf-py),
for crates/scan/tests/interop.rs: metadata, a tokenizer vocabulary, a chat
template and tensors in F32, F16 and several quantized types.

    make_gguf.py OUT [CHAT_TEMPLATE]
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quantize


def main():
    out = sys.argv[1]
    template = sys.argv[2] if len(sys.argv) > 2 else (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    )
    w = GGUFWriter(out, "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}".encode() for i in range(500)])
    w.add_token_scores([0.0] * 500)
    w.add_chat_template(template)
    rng = np.random.default_rng(1)
    w.add_tensor("tok_embd.weight", rng.standard_normal((4, 64)).astype(np.float32))
    w.add_tensor("f16.weight", rng.standard_normal((3, 32)).astype(np.float16))
    for name, qt in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q5_1", Q.Q5_1), ("bf16", Q.BF16)]:
        data = quantize(rng.standard_normal((2, 256)).astype(np.float32), qt)
        w.add_tensor(name + ".weight", data, raw_shape=data.shape, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


main()
