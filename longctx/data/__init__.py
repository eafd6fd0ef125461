"""Data: sources (HF datasets, local files, the embedded corpus), tokenization, packing, loading.

loader = build_loader("embedded", default_tokenizer(), seq_len=4096, batch_size=8, seed=0)
for batch in loader: ...        # input_ids, labels, position_ids, cu_seqlens, num_tokens
state = loader.state_dict()     # JSON-serialisable; load_state_dict(state) resumes exactly
"""

from longctx.data.embedded import DEFAULT_MIX, EmbeddedSource, embedded_source
from longctx.data.loader import Loader, build_loader
from longctx.data.packing import IGNORE_INDEX, pack_batch
from longctx.data.sources import (
    DocSource,
    IndexedSource,
    from_hf,
    hf_source,
    list_source,
    local_source,
    open_source,
    parse_hf_spec,
)
from longctx.data.tokenizer import CHAT_TEMPLATE, default_tokenizer, load_tokenizer, render_chat

__all__ = [
    "DEFAULT_MIX",
    "EmbeddedSource",
    "embedded_source",
    "Loader",
    "build_loader",
    "IGNORE_INDEX",
    "pack_batch",
    "DocSource",
    "IndexedSource",
    "from_hf",
    "hf_source",
    "list_source",
    "local_source",
    "open_source",
    "parse_hf_spec",
    "CHAT_TEMPLATE",
    "default_tokenizer",
    "load_tokenizer",
    "render_chat",
]
