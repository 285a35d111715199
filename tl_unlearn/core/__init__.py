"""The bottom layer: what every other layer needs, importing nothing of tl_unlearn.

- :mod:`~tl_unlearn.core.checks`: argument checks (each raises a ``ValueError`` that names the
  bad value) and the hook and position type aliases.
- :mod:`~tl_unlearn.core.components`: component names, written one way (``a{L}.h{H}``,
  ``m{L}``).
- :mod:`~tl_unlearn.core.results`: the protocol every result follows (``label``, ``seconds``,
  ``to_dict`` / ``from_dict``, ``save`` / ``load``, ``figure(kind=...)``) and
  :func:`~tl_unlearn.core.results.load_result`.
- :mod:`~tl_unlearn.core.files`: atomic writes and the safetensors reader and writer.
"""
