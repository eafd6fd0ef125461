"""Results files for the compare tests: every task of a run gets one score per length, so a run's mean at a
length is that score and the expected cells can be written out by hand."""

from longctx import results as R


def uniform_results(tmp_path, name, label, lengths, means, train=None) -> str:
    """tmp_path/<name>.json with every task scoring means[i] at lengths[i] (None: that length not run)."""
    meta = dict(backend="hf", chat_template=False, samples=2, haystack="essays", lm_eval_version="0.4.13")
    r = R.new_results(
        model=name, rope_parameters=None, tasks=list(R.RULER_TASKS), lengths=lengths, label=label, train=train, **meta
    )
    for n, m in zip(lengths, means, strict=True):
        if m is not None:
            for t in R.RULER_TASKS:
                R.set_score(r, t, n, m, 2)
    path = tmp_path / f"{name}.json"
    R.save(r, path)
    return str(path)
