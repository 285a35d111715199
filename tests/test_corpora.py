import pytest

from tl_unlearn.data.corpora import BUILTIN_CORPORA, clean_wikitext, load_corpus


@pytest.mark.parametrize("name", sorted(BUILTIN_CORPORA))
def test_builtin_corpus_loads_many_documents(name):
    docs = load_corpus(name)
    assert len(docs) >= 100
    assert all(isinstance(d, str) and d.strip() for d in docs)
    assert load_corpus(name) == docs  # deterministic order


def test_python_code_is_code_and_wikipedia_is_clean_prose():
    code = load_corpus("python_code")
    assert sum("def " in d for d in code) > 0.8 * len(code)
    wiki = " ".join(load_corpus("wikipedia")[:20])
    assert "[[" not in wiki and "{{" not in wiki and "<ref" not in wiki
    assert "Anarchism" in wiki


def test_clean_wikitext_links_templates_refs():
    raw = "{{Infobox|a={{nested}}}}'''X''' is [[a|b]] and [[c]].<ref>cite</ref>\n== Head ==\ntext"
    assert clean_wikitext(raw) == "X is b and c.\nHead\ntext"


def test_unknown_corpus_names_choices():
    with pytest.raises(ValueError, match="python_code"):
        load_corpus("pyhton_code")
