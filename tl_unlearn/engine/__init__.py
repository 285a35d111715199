"""The engine under every metric: hooks, batched forward passes and scoring from the residual.

- :mod:`~tl_unlearn.engine.hooks`: :class:`~tl_unlearn.engine.hooks.Intervention` (a named
  list of TransformerLens hooks, composed with ``+``) and streaming activations through hooks.
- :mod:`~tl_unlearn.engine.forward`: the streamed forward pass (row chunks sized to a memory
  budget, passes that share their clean prefix, resuming from a block).
- :mod:`~tl_unlearn.engine.scoring`: loss, top-k and ranks from the final residual, the
  vocabulary a slice at a time (no full ``[batch, pos, d_vocab]`` logits).
- :mod:`~tl_unlearn.engine.tl_patches`: every use of TransformerLens internals, in one module
  (the fused attention path, the weight layout, the edge-patching switches).

Metrics (:mod:`tl_unlearn.metrics`) and interventions build on these; users rarely need them
(``Intervention`` is exported by :mod:`tl_unlearn.interventions` and the package root).
"""
