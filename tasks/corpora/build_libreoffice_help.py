"""Rebuild the committed demo corpus from ../shared/data/libreoffice_help (run from the repo root).

Keeps the paragraphs translated into every locale, so the corpus is parallel (the same paragraph
ids in every language file), and splits them by a hash of the paragraph id: about one in eight
paragraphs goes to `heldout/`, the rest to `train/`. The held-out split is fixed by the id alone,
so it is the same in every language and doubles as parallel evaluation data. Training, vocabulary
and word-vector steps read only `train/`.

    python tasks/corpora/build_libreoffice_help.py [SOURCE_DIR]
"""

import hashlib
import pathlib
import sys

LOCALES = ("en-US", "pt", "de", "fr", "es", "ru", "el", "hi", "ja", "ko", "zh-CN", "km", "dz")
HELDOUT_ONE_IN = 8
OUT = pathlib.Path(__file__).parent / "libreoffice_help"


def is_heldout(paragraph_id: str) -> bool:
    digest = hashlib.sha256(paragraph_id.encode("utf-8")).digest()
    return digest[0] % HELDOUT_ONE_IN == 0


def read_tsv(path: pathlib.Path) -> dict[str, str]:
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition("\t")
        if text.strip():
            rows[key] = " ".join(text.split())
    return rows


def main(source: pathlib.Path) -> None:
    by_locale = {loc: read_tsv(source / f"{loc}.tsv") for loc in LOCALES}
    common = sorted(set.intersection(*(set(rows) for rows in by_locale.values())))
    for split in ("train", "heldout"):
        (OUT / split).mkdir(parents=True, exist_ok=True)
    for loc, rows in by_locale.items():
        for split, keep in (("train", False), ("heldout", True)):
            ids = [k for k in common if is_heldout(k) == keep]
            text = "".join(f"{k}\t{rows[k]}\n" for k in ids)
            (OUT / split / f"{loc}.tsv").write_text(text, encoding="utf-8")
    print(f"{len(common)} parallel paragraphs in {len(LOCALES)} locales -> {OUT}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/libreoffice_help"))
