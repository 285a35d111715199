"""Settings shared by the tests of the benchmark, its report and its CLI."""

#: A small benchmark run on the tiny model (every default method; seconds, not minutes).
SMALL = dict(
    model="tiny",
    seq_len=64,
    fit_tokens=3000,
    eval_tokens=1500,
    mia_texts=64,
    options={"sae.training_tokens": 20_000, "sae.d_sae": 256},
)
