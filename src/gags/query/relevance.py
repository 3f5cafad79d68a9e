"""LERF relevance: how much more a feature resembles the query than any canonical negative phrase.

For a feature f, a query q and negatives n_1..n_K (all compared by cosine similarity), LERF and
LangSplat (eval/openclip_encoder.py) compute

    r = min_j softmax(10 * [cos(f, q), cos(f, n_j)])[0]

A two-way softmax is a sigmoid of the difference, and the sigmoid is increasing, so the minimum
over the negatives is reached at the most similar negative:

    r = sigmoid(10 * (cos(f, q) - max_j cos(f, n_j)))

which is what :func:`relevance` evaluates (one matrix product, no loop over negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gags.errors import GagsError

#: LERF's canonical negative phrases
CANONICAL_NEGATIVES: tuple[str, ...] = ("object", "things", "stuff", "texture")

#: softmax temperature of LERF (logits are 10 x cosine)
TEMPERATURE: float = 10.0


def relevance(
    features: torch.Tensor, query: torch.Tensor, negatives: torch.Tensor, *, chunk: int = 1 << 18
) -> torch.Tensor:
    """LERF relevance of every feature vector.

    Args:
        features: (..., D) features (any scale; they are L2-normalised here; an all-zero vector,
            e.g. an empty pixel, has cosine 0 with everything and relevance 0.5).
        query: (D,) one query embedding, or (Q, D) several.
        negatives: (K, D) embeddings of the negative phrases, K >= 1.
        chunk: rows of features processed at a time (bounds the temporary memory).

    Returns:
        (...) relevance in (0, 1) for one query, or (Q, ...) for Q queries; float32.
    """
    if negatives.ndim != 2 or negatives.shape[0] == 0:
        raise ValueError(f"negatives must be (K, D) with K >= 1, got {tuple(negatives.shape)}")
    single = query.ndim == 1
    queries = query[None] if single else query
    D = features.shape[-1]
    if queries.shape[-1] != D or negatives.shape[-1] != D:
        raise ValueError(
            f"embedding sizes differ: features {D}, query {queries.shape[-1]}, "
            f"negatives {negatives.shape[-1]}"
        )
    lead = features.shape[:-1]
    flat = features.reshape(-1, D)
    phrases = F.normalize(torch.cat([queries, negatives]).to(flat.device, torch.float32), dim=-1)
    Q = queries.shape[0]
    out = torch.empty(Q, flat.shape[0], dtype=torch.float32, device=flat.device)
    for start in range(0, flat.shape[0], chunk):
        f = F.normalize(flat[start : start + chunk].float(), dim=-1)
        cos = f @ phrases.T  # (n, Q + K)
        best_negative = cos[:, Q:].max(dim=1, keepdim=True).values  # (n, 1)
        out[:, start : start + chunk] = torch.sigmoid(TEMPERATURE * (cos[:, :Q] - best_negative)).T
    out = out.reshape(Q, *lead)
    return out[0] if single else out


def encode_query(encoder, texts: list[str], negatives: tuple[str, ...] = CANONICAL_NEGATIVES):
    """Embed query texts and the negatives with a :class:`~gags.models.encoder.TextImageEncoder`.

    Returns ``(queries (Q, D), negatives (K, D))``. Raises :class:`~gags.errors.GagsError` for an empty
    or blank query text.
    """
    cleaned = [t.strip() for t in texts]
    if not cleaned or any(not t for t in cleaned):
        raise GagsError(f'empty query text in {texts!r}: give a non-empty phrase such as "mug"')
    embeddings = encoder.encode_texts(cleaned + list(negatives)).float()
    return embeddings[: len(cleaned)], embeddings[len(cleaned) :]
