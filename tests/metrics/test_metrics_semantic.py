from measure.metrics.semantic import cosine_similarity, get_embedder, semantic_similarity


def test_minilm_paraphrase_beats_unrelated():
    emb = get_embedder()
    assert get_embedder() is emb  # cached
    v = emb.embed(["Sarah has seven apples now.", ""])
    assert v.shape == (2, 384)
    assert abs(float((v[0] ** 2).sum()) - 1.0) < 1e-5
    para = cosine_similarity("Sarah has seven apples now.", "Now Sarah owns 7 apples.")
    unrelated = cosine_similarity("Sarah has seven apples now.", "The castle stood near the dark forest.")
    assert para > 0.7 > 0.3 > unrelated
    res = semantic_similarity(
        "She now has 12 apples in total.",
        "So Sarah has 12 apples altogether.",
        "The king lived in a castle with his three daughters.",
    )
    assert res["semantic_oracle"] > res["semantic_ignore"] and res["semantic_margin"] > 0
