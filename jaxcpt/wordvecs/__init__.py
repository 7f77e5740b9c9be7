"""Cross-lingual word vectors, the input of OFA, WECHSEL and FOCUS: `build` (from a parallel
corpus), `load` (gensim, word2vec, `.npz`), `evaluate` (precision@k on gold dictionaries),
`units` (language codes, words and pieces as ColexNet+ keys) and `commands` (the CLI)."""
