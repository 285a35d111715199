"""Models: the embedded SmolLM2-135M default (offline), the tiny test model and its twin, any
TransformerLens model; the planted-circuit models and their retrained twins.

- :mod:`~tl_unlearn.models.loading`: :func:`load_model`, :func:`load_default_model`,
  :func:`load_tiny_model`, :func:`use_fused_attention`.
- :mod:`~tl_unlearn.models.planted`: the planted models (their specs, data, training and
  loading).
"""

from tl_unlearn.models.loading import (
    load_default_model,
    load_model,
    load_tiny_model,
    use_fused_attention,
)

__all__ = ["load_default_model", "load_model", "load_tiny_model", "use_fused_attention"]
