"""Component names, written one way: ``a{L}.h{H}`` for head ``H`` of layer ``L`` and ``m{L}``
for the MLP of layer ``L`` (the node names of EAP-IG's and MIB's circuit files). The older
spelling ``L{L}H{H}`` / ``L{L}MLP`` is still read.

A component is ``(layer, head)``, with ``head=None`` for the MLP.

Examples:
    >>> component_name((1, 2)), component_name((0, None))
    ('a1.h2', 'm0')
    >>> parse_component("a1.h2"), parse_component("L1H2"), parse_component("L0MLP")
    ((1, 2), (1, 2), (0, None))
"""

from __future__ import annotations

import re

__all__ = ["Component", "component_name", "parse_component"]

#: ``(layer, head)``; ``head`` is None for the layer's MLP.
Component = tuple[int, int | None]

_NAME = re.compile(r"a(\d+)\.h(\d+)|m(\d+)|L(\d+)H(\d+)|L(\d+)MLP")


def component_name(component: Component) -> str:
    """``(layer, head)`` as ``a{layer}.h{head}``; ``(layer, None)`` as ``m{layer}``."""
    layer, head = component
    return f"m{layer}" if head is None else f"a{layer}.h{head}"


def parse_component(name: str) -> Component:
    """A component's name (``a1.h2``, ``m0``, or the older ``L1H2``, ``L0MLP``) as
    ``(layer, head)``; a ValueError names anything else.

    Examples:
        >>> parse_component("head 3")
        Traceback (most recent call last):
        ...
        ValueError: Unknown component name 'head 3': write a{L}.h{H} for a head, m{L} for an MLP.
    """
    m = _NAME.fullmatch(str(name).strip())
    if m is None:
        raise ValueError(
            f"Unknown component name {name!r}: write a{{L}}.h{{H}} for a head, m{{L}} for an MLP."
        )
    a_l, a_h, m_l, l_l, l_h, l_mlp = m.groups()
    if a_l is not None:
        return int(a_l), int(a_h)
    if l_l is not None:
        return int(l_l), int(l_h)
    return int(m_l if m_l is not None else l_mlp), None
