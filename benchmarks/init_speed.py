"""OFA initialization speed and memory: jaxcpt.init.ofa vs the official computation path.

    .venv/bin/python benchmarks/init_speed.py --scale 0.05            # quick run
    .venv/bin/python benchmarks/init_speed.py --scale 1 --json out.json  # realistic shapes

Scale 1 = 250k source pieces, 400k target pieces, 4M x 200 word vectors, H = 768, k in {100, 200,
400} (synthetic data with real fast tokenizers: benchmarks/synthetic_ofa_data.py). Each side runs
in its own subprocess, which reports its own peak RSS (ru_maxrss):
- ours: one cold call of `jaxcpt.init.ofa` for all k (tokenizer loading, word-list tokenization,
  SVD, neighbours, everything), measured in full;
- official: benchmarks/official_ofa_path.py, which holds the full-size arrays (word vectors in a
  gensim KeyedVectors, subword matrices, E_s) but runs its two Python loops on a subsample — the
  first `--word-fraction` of the words and `--row-fraction` of the 1024-row target blocks (evenly
  spaced); those two stages are extrapolated linearly to the full size, every other stage (loading,
  SVD per k, overlap per k, copies) is measured in full. Its RSS is a lower bound (the per-subword
  word lists are only partly filled). As in the official ofa.py, the word list is tokenized once
  and SVD, overlap and the neighbour rows are redone for every k.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def log(message: str) -> None:
    print(f"[init_speed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child_prepare(args) -> dict:
    import synthetic_ofa_data as data

    info = data.prepare(args.workdir, args.scale)
    log(f"synthetic data: {info}")
    return info


def child_ours(args) -> dict:
    started = time.perf_counter()
    from jaxcpt.init.result import get_initializer
    ofa = get_initializer("ofa")   # the registered jaxcpt.init.ofa function
    import_seconds = time.perf_counter() - started
    source = np.load(args.workdir / "source_embeddings.npy")
    progress = []   # (seconds since the call started, ofa's progress line): the stage breakdown

    def record(message: str) -> None:
        progress.append((round(time.perf_counter() - started, 1), message))
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    results = ofa(source, args.workdir / "source_tok", args.workdir / "target_tok",
                  word_vectors=args.workdir / "words.npz", dims=args.dims, log=record)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "import_seconds": import_seconds, "peak_rss_bytes": peak_rss_bytes(),
            "progress": progress,
            "stats": {k: {key: v for key, v in r.stats.items()} for k, r in results.items()}}


def child_official(args) -> dict:
    import official_ofa_path as official
    from gensim.models import KeyedVectors
    from transformers import AutoTokenizer

    stages, extrapolated = {}, {}
    started = time.perf_counter()
    source_tok = AutoTokenizer.from_pretrained(str(args.workdir / "source_tok"))
    target_tok = AutoTokenizer.from_pretrained(str(args.workdir / "target_tok"))
    source = np.load(args.workdir / "source_embeddings.npy")
    with np.load(args.workdir / "words.npz") as archive:
        keys, vectors = archive["keys"].tolist(), archive["vectors"]
    keyed = KeyedVectors(vectors.shape[1])     # the state KeyedVectors.load leaves: all in RAM
    keyed.index_to_key, keyed.vectors = keys, vectors
    keyed.key_to_index = {key: i for i, key in enumerate(keys)}
    words = list(keyed.index_to_key)
    stages["load"] = time.perf_counter() - started
    word_limit = max(1, math.ceil(args.word_fraction * len(words)))
    factor_words = len(words) / word_limit
    for name, tok in (("source", source_tok), ("target", target_tok)):
        lists, t_lists = official.timed(official.subword_lists, tok, words, word_limit)
        _, t_means = official.timed(official.subword_means, lists, keyed, words, len(tok),
                                    keyed.vector_size)
        del lists
        stages[f"tokenize_{name}_sample"] = t_lists + t_means
        extrapolated[f"tokenize_{name}"] = (t_lists + t_means) * factor_words
        log(f"official: {name} subwords from {word_limit:,} words in {t_lists + t_means:.1f}s "
            f"-> {extrapolated[f'tokenize_{name}']:.0f}s for {len(words):,}")
    # The subsampled word loop leaves most subwords uncovered, which would make the row loop cheap
    # (uncovered rows skip the neighbour search). Its cost depends only on shapes and on which rows
    # are zero, so full-size float64 matrices with every row covered stand in (>= 99% of the rows are
    # covered at every scale we ran; this can only overstate the official time by that last 1%).
    rng = np.random.default_rng(0)
    source_subwords = rng.standard_normal((len(source_tok), keyed.vector_size))
    target_subwords = rng.standard_normal((len(target_tok), keyed.vector_size))
    total_blocks = official.num_blocks(len(target_tok))
    # At least the first and the last block: new tokens sit at the end of an extended vocabulary.
    sample = min(total_blocks, max(2, math.ceil(args.row_fraction * total_blocks)))
    block_ids = np.unique(np.linspace(0, total_blocks - 1, sample).round().astype(int)).tolist()
    for k in args.dims:
        (primitives, coords), t_svd = official.timed(official.factorize, source, k)
        overlapping, t_overlap = official.timed(official.overlapping_tokens, target_tok, source_tok)
        started = time.perf_counter()
        kept = {token: ids[0] for token, ids in overlapping.items()}
        additional = {t: i for t, i in target_tok.get_vocab().items() if t not in kept}
        target_matrix = np.zeros((len(target_tok), k), dtype=coords.dtype)
        for _, (t_id, s_id) in overlapping.items():
            target_matrix[t_id] = coords[s_id]
        fallback = official.fallback_rows(coords, target_tok)
        t_copy = time.perf_counter() - started
        (_, counts), t_rows = official.timed(
            official.target_rows, source_subwords, target_subwords, source_tok, target_tok,
            coords.copy(), target_matrix.copy(), kept, block_ids, fallback)
        del fallback
        stages.update({f"k{k}_svd": t_svd, f"k{k}_overlap": t_overlap,
                       f"k{k}_copy_and_fallback": t_copy, f"k{k}_rows_sample": t_rows})
        # Cosine blocks scale with the number of blocks, the Python row loop with the number of
        # rows to initialize (the sampled blocks hold a different share of new rows than the whole).
        sampled_new = max(1, counts["neighbors"] + counts["random"])
        extrapolated[f"k{k}_cosine"] = counts["cosine_seconds"] * total_blocks / len(block_ids)
        extrapolated[f"k{k}_row_loop"] = counts["loop_seconds"] * len(additional) / sampled_new
        log(f"official k={k}: svd {t_svd:.1f}s, overlap {t_overlap:.1f}s, {len(block_ids)}/"
            f"{total_blocks} blocks {t_rows:.1f}s -> cosine {extrapolated[f'k{k}_cosine']:.0f}s + "
            f"row loop {extrapolated[f'k{k}_row_loop']:.0f}s ({counts}, {len(additional):,} "
            f"additional tokens)")
    measured_full = sum(v for key, v in stages.items() if not key.endswith("_sample"))
    return {"seconds_extrapolated": measured_full + sum(extrapolated.values()),
            "measured_full_stages": stages, "extrapolated_stages": extrapolated,
            "word_fraction": word_limit / len(words), "row_fraction": len(block_ids) / total_blocks,
            "peak_rss_bytes_lower_bound": peak_rss_bytes()}


CHILDREN = {"prepare": child_prepare, "ours": child_ours, "official": child_official}


def run_child(name: str, args) -> dict:
    command = [sys.executable, __file__, "--child", name, "--workdir", str(args.workdir),
               "--scale", str(args.scale), "--dims", ",".join(map(str, args.dims)),
               "--word-fraction", str(args.word_fraction), "--row-fraction", str(args.row_fraction)]
    if args.skip_official:
        command.append("--skip-official")
    started = time.time()
    subprocess.run(command, check=True)
    log(f"{name}: {time.time() - started:.0f}s wall")
    return json.loads((args.workdir / f"{name}.json").read_text())


def machine() -> dict:
    """What the numbers depend on: the official path's Python loops and BLAS calls run at very
    different speeds on different CPUs (the ratio moved from ~21x to ~17.5x between two VMs)."""
    import platform

    from jaxcpt.init.neighbors import available_cores

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": available_cores(), "python": platform.python_version(),
            "numpy": np.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the realistic sizes (250k/400k pieces, 4M words)")
    parser.add_argument("--dims", type=lambda s: tuple(int(x) for x in s.split(",")),
                        default=(100, 200, 400), help="k values (default 100,200,400)")
    parser.add_argument("--word-fraction", type=float, default=0.01,
                        help="share of the word list the official word loop actually runs")
    parser.add_argument("--row-fraction", type=float, default=0.02,
                        help="share of the 1024-row target blocks the official row loop runs")
    parser.add_argument("--skip-official", action="store_true",
                        help="time jaxcpt only (e.g. to see its peak RSS at a larger scale)")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="where the synthetic data goes (default: a temporary directory)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the report here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child](args)
        (args.workdir / f"{args.child}.json").write_text(json.dumps(result, indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="init_speed_") as tmp:
        args.workdir = args.workdir or pathlib.Path(tmp)
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = {"scale": args.scale, "dims": list(args.dims), "machine": machine(),
                  "data": run_child("prepare", args), "ours": run_child("ours", args)}
        if not args.skip_official:
            report["official"] = run_child("official", args)
            report["speedup"] = (report["official"]["seconds_extrapolated"]
                                 / report["ours"]["seconds"])
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def print_report(report: dict) -> None:
    data, ours = report["data"], report["ours"]
    gib = 2 ** 30
    print(f"scale {report['scale']}: {data['source_tokens']:,} source / {data['target_tokens']:,} "
          f"target pieces, {data['words']:,} x {data['word_dim']} word vectors, H={data['hidden']}, "
          f"k={report['dims']}")
    box = report["machine"]
    print(f"machine: {box['cpu']}, {box['cores']} cores, Python {box['python']}, "
          f"numpy {box['numpy']}")
    print(f"jaxcpt ofa (measured, one cold call): {ours['seconds']:8.1f} s   peak RSS "
          f"{ours['peak_rss_bytes'] / gib:5.2f} GiB   (imports {ours['import_seconds']:.1f} s)")
    if "official" in report:
        off = report["official"]
        print(f"official path (extrapolated from word fraction {off['word_fraction']:.3f}, "
              f"row fraction {off['row_fraction']:.3f}): {off['seconds_extrapolated']:8.1f} s   "
              f"peak RSS >= {off['peak_rss_bytes_lower_bound'] / gib:5.2f} GiB")
        print(f"speedup: {report['speedup']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
