"""Loading multilingual word vectors: gensim KeyedVectors, word2vec text/binary, jaxcpt `.npz`.

Keys follow ColexNet+ (`iso639-3:word`, bare keys are English, `$` marks a word boundary); this
module only loads them, `jaxcpt.init.ofa` interprets them. Large files are never held twice: `.npz`
members stored uncompressed (keys and vectors) and gensim's separate `.vectors.npy` are
memory-mapped, and `iter_word_vector_chunks` streams word2vec text/binary files (and reads
memory-mapped arrays with plain file reads, so a 4M x 200 table and its keys never become
resident) chunk by chunk.
"""

from __future__ import annotations

import gzip
import io
import mmap
import pathlib
import zipfile
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from jaxcpt.errors import JaxcptError

GENSIM_SUFFIXES = (".kv", ".model", ".wv")
TEXT_SUFFIXES = (".txt", ".vec", ".txt.gz", ".vec.gz")
BINARY_SUFFIXES = (".bin",)
FORMATS_HINT = ("expected .npz (jaxcpt), .kv/.model/.wv (gensim), .bin (word2vec binary) or "
                ".txt/.vec[.gz] (word2vec text)")
DEFAULT_CHUNK_ROWS = 65536


@dataclass
class WordVectors:
    """keys[i] is the word of vectors[i]; vectors is [N, d] float32 (maybe a read-only memmap).
    keys is a list or a 1-D string array (a memmap for .npz files: 4M keys never become objects)."""

    keys: Sequence[str]
    vectors: np.ndarray

    def __post_init__(self):
        if self.vectors.ndim != 2 or len(self.keys) != self.vectors.shape[0]:
            raise JaxcptError(f"word vectors: {len(self.keys)} keys but vectors of shape "
                              f"{self.vectors.shape}")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def iter_chunks(self, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
        """(keys, float32 [n, d]) blocks in order; memory-mapped vectors are read, not mapped in."""
        for start in range(0, len(self.keys), rows):
            stop = min(start + rows, len(self.keys))
            if isinstance(self.keys, np.ndarray):
                keys = _read_rows(self.keys, start, stop).tolist()
            else:
                keys = self.keys[start:stop]
            yield (keys,
                   _read_rows(self.vectors, start, stop).astype(np.float32, copy=False))


def _read_rows(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    """array[start:stop]; from a memory-mapped file by plain reads, so the pages do not stay
    resident (and counted in RSS) as a mapping's pages would."""
    # Only a whole-file mapping (base is the mmap itself) has a trustworthy filename + offset.
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) \
            and array.flags.c_contiguous and getattr(array, "filename", None):
        row_items = int(np.prod(array.shape[1:], dtype=np.int64))
        block = np.fromfile(array.filename, dtype=array.dtype, count=(stop - start) * row_items,
                            offset=array.offset + start * row_items * array.dtype.itemsize)
        return block.reshape((stop - start, *array.shape[1:]))
    return np.asarray(array[start:stop])


def load_word_vectors(path_or_obj) -> WordVectors:
    """WordVectors from a path (format by suffix) or an object (WordVectors, gensim KeyedVectors or
    Word2Vec, anything with `keys` and `vectors`)."""
    if isinstance(path_or_obj, WordVectors):
        return path_or_obj
    if not isinstance(path_or_obj, (str, pathlib.Path)):
        return _from_object(path_or_obj)
    path = _existing(path_or_obj)
    name = path.name.lower()
    if name.endswith(".npz"):
        return _load_npz(path)
    if name.endswith(GENSIM_SUFFIXES):
        return _from_object(_load_gensim(path))
    if name.endswith(TEXT_SUFFIXES) or name.endswith(BINARY_SUFFIXES):
        chunks = list(iter_word_vector_chunks(path))
        keys = [k for chunk_keys, _ in chunks for k in chunk_keys]
        vectors = np.concatenate([v for _, v in chunks]) if chunks else np.zeros((0, 0), np.float32)
        return WordVectors(keys, vectors)
    raise JaxcptError(f"{path}: unknown word-vector format ({FORMATS_HINT})")


def iter_word_vector_chunks(path_or_obj, rows: int = DEFAULT_CHUNK_ROWS
                            ) -> Iterator[tuple[list[str], np.ndarray]]:
    """Stream (keys, float32 [n, d]) blocks without holding the whole table (text/binary files are
    parsed block by block; other formats are loaded memory-mapped and read block by block)."""
    if isinstance(path_or_obj, (str, pathlib.Path)):
        path = _existing(path_or_obj)
        name = path.name.lower()
        if name.endswith(TEXT_SUFFIXES):
            yield from _iter_text(path, rows)
            return
        if name.endswith(BINARY_SUFFIXES):
            yield from _iter_binary(path, rows)
            return
    yield from load_word_vectors(path_or_obj).iter_chunks(rows)


def check_word_vectors_path(path) -> None:
    """Fail early (before any heavy work) on a missing file or an unknown format."""
    if isinstance(path, (str, pathlib.Path)):
        name = _existing(path).name.lower()
        if not name.endswith((".npz",) + GENSIM_SUFFIXES + TEXT_SUFFIXES + BINARY_SUFFIXES):
            raise JaxcptError(f"{path}: unknown word-vector format ({FORMATS_HINT})")


def _existing(path) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise JaxcptError(f"word vectors {path} do not exist (or are not a file)")
    return path


def _from_object(obj) -> WordVectors:
    if hasattr(obj, "wv") and hasattr(obj.wv, "index_to_key"):  # gensim Word2Vec / FastText model
        obj = obj.wv
    if hasattr(obj, "index_to_key") and hasattr(obj, "vectors"):  # gensim KeyedVectors
        vectors = obj.vectors
        return WordVectors(list(obj.index_to_key), vectors if vectors.dtype == np.float32
                           and isinstance(vectors, np.memmap) else np.asarray(vectors, np.float32))
    if hasattr(obj, "keys") and hasattr(obj, "vectors") and not callable(obj.keys):
        return WordVectors([str(k) for k in obj.keys], np.asarray(obj.vectors, np.float32))
    raise JaxcptError(f"cannot use a {type(obj).__name__} as word vectors ({FORMATS_HINT}, or a "
                      f"gensim KeyedVectors / WordVectors object)")


def _load_gensim(path: pathlib.Path):
    try:
        from gensim.utils import SaveLoad
    except ImportError:
        raise JaxcptError(f"{path}: reading gensim files needs the optional dependency gensim "
                          f"(pip install gensim), or convert the vectors to .npz / word2vec "
                          f"text") from None
    try:
        return SaveLoad.load(str(path), mmap="r")
    except Exception as err:  # unpickling errors have many types; report them in one line
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise JaxcptError(f"{path}: not a gensim KeyedVectors/Word2Vec file "
                          f"({type(err).__name__}: {first_line})") from None


def _load_npz(path: pathlib.Path) -> WordVectors:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise JaxcptError(f"{path}: not an .npz archive") from None
    with archive:
        names = set(archive.namelist())
        if not {"keys.npy", "vectors.npy"} <= names:
            raise JaxcptError(f"{path}: a jaxcpt word-vector .npz holds `keys` and `vectors` "
                              f"arrays; found {sorted(n.removesuffix('.npy') for n in names)}")
        keys, vectors = (_read_member(path, archive, name) for name in ("keys", "vectors"))
    if vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise JaxcptError(f"{path}: `vectors` must be a float [N, d] array, got {vectors.dtype} "
                          f"{vectors.shape}")
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise JaxcptError(f"{path}: `keys` must be a 1-D string array, got {keys.dtype} "
                          f"{keys.shape}")
    return WordVectors(keys, vectors)


def _read_member(path: pathlib.Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    info = archive.getinfo(f"{name}.npy")
    if info.compress_type == zipfile.ZIP_STORED:  # what np.savez writes
        return _memmap_member(path, info, name)
    with archive.open(info) as handle:
        try:
            return np.lib.format.read_array(io.BufferedReader(handle), allow_pickle=False)
        except ValueError:  # object arrays (pickles) are refused
            raise JaxcptError(f"{path}: `{name}` holds Python objects; save plain arrays") from None


def _memmap_member(path: pathlib.Path, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    # An uncompressed member is a plain .npy file inside the zip: map it at its data offset.
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        handle.seek(start)
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(handle)
        data_offset = handle.tell()
    if dtype.hasobject:
        raise JaxcptError(f"{path}: `{name}` holds Python objects; save plain arrays")
    # Fortran order is read correctly too, but only C order can be streamed by plain row reads.
    return np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=shape,
                     order="F" if fortran else "C")


def _open_text(path: pathlib.Path):
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8", errors="strict", newline="\n")


def _iter_text(path: pathlib.Path, rows: int) -> Iterator[tuple[list[str], np.ndarray]]:
    with _open_text(path) as handle:
        try:
            first = handle.readline()
            header = first.split()
            if len(header) == 2 and all(h.isdigit() for h in header):
                dim, pending = int(header[1]), []
            else:  # headerless (GloVe-style): the first line is already a vector
                dim, pending = len(header) - 1, [first]
            if dim < 1:
                raise JaxcptError(f"{path}: first line is neither a `N d` header nor a vector")
            line_no = 1 if not pending else 0
            while True:
                lines = pending + [line for _, line in zip(range(rows - len(pending)), handle)]
                pending = []
                lines = [line for line in lines if line.strip()]
                if not lines:
                    return
                keys, values = [], []
                for line in lines:
                    key, _, rest = line.rstrip("\n").rstrip(" ").partition(" ")
                    keys.append(key)
                    values.append(rest)
                flat = np.array(" ".join(values).split(), dtype=np.float32)
                if flat.size != dim * len(keys):
                    raise JaxcptError(f"{path}: lines {line_no + 1}-{line_no + len(lines)} do not "
                                      f"all hold a word and {dim} numbers")
                line_no += len(lines)
                yield keys, flat.reshape(len(keys), dim)
        except (UnicodeDecodeError, ValueError) as err:
            raise JaxcptError(f"{path}: not a word2vec text file ({type(err).__name__})") from None


def _iter_binary(path: pathlib.Path, rows: int) -> Iterator[tuple[list[str], np.ndarray]]:
    with open(path, "rb") as handle:
        header = handle.readline().split()
        if len(header) != 2 or not all(h.isdigit() for h in header):
            raise JaxcptError(f"{path}: a word2vec binary file starts with a `N d` header line")
        count, dim = int(header[0]), int(header[1])
        row_bytes = dim * 4
        buffer, pos, done = b"", 0, 0
        while done < count:
            n = min(rows, count - done)
            keys, block = [], np.empty((n, dim), np.float32)
            for i in range(n):
                space = buffer.find(b" ", pos)
                if space < 0 or space + 1 + row_bytes > len(buffer):
                    buffer, pos = buffer[pos:] + handle.read(1 << 22), 0
                    space = buffer.find(b" ")
                    if space < 0 or space + 1 + row_bytes > len(buffer):
                        raise JaxcptError(f"{path}: truncated after {done + i} of {count} vectors")
                try:
                    keys.append(buffer[pos:space].lstrip(b"\n").decode("utf-8"))
                except UnicodeDecodeError:
                    raise JaxcptError(f"{path}: word {done + i} is not UTF-8") from None
                block[i] = np.frombuffer(buffer, dtype="<f4", count=dim, offset=space + 1)
                pos = space + 1 + row_bytes
            done += n
            yield keys, block
