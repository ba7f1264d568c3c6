"""Text embeddings for the vector sink and search: all-MiniLM-L6-v2 (int8 ONNX), 384-d, cosine."""

from ys_platform.embeddings.model import (
    DIMENSION,
    DISTANCE,
    MAX_TOKENS,
    MODEL_ID,
    TOKENIZER_SHA256,
    Embedder,
    EmbeddingModelError,
    shared_embedder,
)

__all__ = [
    "DIMENSION",
    "DISTANCE",
    "MAX_TOKENS",
    "MODEL_ID",
    "TOKENIZER_SHA256",
    "Embedder",
    "EmbeddingModelError",
    "shared_embedder",
]
