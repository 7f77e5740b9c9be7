"""seqio registrations of jaxcpt: importing this package registers the shipped demo corpus.

`libreoffice_help` (Mixture over `libreoffice_help.<lang>` Tasks, split "train", α = 0.3 by
example counts) and `libreoffice_help_heldout` (`libreoffice_help_heldout.<lang>`, split
"validation", for evaluation only). Register more corpora with
`jaxcpt.data.corpus_tasks.register_corpus(name, path, ...)` (a plain function, gin-bindable).
"""

from jaxcpt.data.corpus_tasks import register_corpus
from jaxcpt.data.text_files import shipped_corpus  # noqa: F401  (re-exported)

SHIPPED_CORPUS = "libreoffice_help"

register_corpus(SHIPPED_CORPUS, shipped_corpus(SHIPPED_CORPUS))
