"""Data: builtin corpora, text and token datasets, forget/retain and prompt→answer tasks.

- :mod:`~tl_unlearn.data.corpora`: the builtin offline corpora (:func:`load_corpus`).
- :mod:`~tl_unlearn.data.datasets`: :class:`TextDataset` (documents, fit/eval splits) and
  :class:`TokenDataset` (token rows, masks, batches).
- :mod:`~tl_unlearn.data.tasks`: :func:`make_task` (:class:`ForgetRetainTask`) and
  prompt→answer tasks (:class:`PromptAnswers`: your own, or builtin ioi / induction /
  greater_than / facts, with counterfactual pairs).
"""

from tl_unlearn.data.corpora import load_corpus
from tl_unlearn.data.datasets import TextDataset, TokenDataset
from tl_unlearn.data.tasks import ForgetRetainTask, PromptAnswers, make_task

__all__ = [
    "ForgetRetainTask",
    "PromptAnswers",
    "TextDataset",
    "TokenDataset",
    "load_corpus",
    "make_task",
]
