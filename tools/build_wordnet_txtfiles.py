#!/usr/bin/env python
"""Build NegLabel's WordNet candidate lists (``txtfiles/<lexname>.txt``).

Reads a WordNet 3.0 database (Debian: ``apt-get install wordnet-base``,
files in ``/usr/share/wordnet``) with nltk and writes one label per line per
lexicographer file. The rules are documented in
:mod:`cma_ood.datasets.wordnet` and ``txtfiles/README.md``.

Example::

    python tools/build_wordnet_txtfiles.py --wordnet-dir /usr/share/wordnet \\
        --out-dir txtfiles
"""
import argparse
import logging
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from cma_ood.datasets.wordnet import (DEFAULT_LEXNAMES,  # noqa: E402
                                      build_candidate_lists,
                                      line_count_report,
                                      write_candidate_lists)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Build WordNet candidate label lists for NegLabel.')
    parser.add_argument(
        '--wordnet-dir', default='/usr/share/wordnet',
        help='WordNet 3.0 database directory (data.*, index.*, *.exc); '
        "Debian's wordnet-base package installs it in /usr/share/wordnet")
    parser.add_argument('--out-dir', default='txtfiles',
                        help='output directory for <lexname>.txt files')
    parser.add_argument(
        '--lexnames', nargs='+', default=list(DEFAULT_LEXNAMES),
        metavar='LEXNAME',
        help='lexicographer files to build, in order (default: the 27 '
        'files of the published NegLabel lists)')
    parser.add_argument(
        '--dedup-across-files', action='store_true',
        help='also drop labels listed by an earlier file (the published '
        'lists are de-duplicated within each file only)')
    parser.add_argument(
        '--keep-all-cluster-heads', action='store_true',
        help='keep the first head synset of each adj.all cluster, which '
        'the published adj.all list lacks')
    parser.add_argument(
        '--work-dir', default=None,
        help='directory to stage the database and the generated lexnames '
        'table in for nltk (default: a temporary directory)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        lists = build_candidate_lists(
            args.wordnet_dir, args.lexnames,
            dedup_across_files=args.dedup_across_files,
            drop_first_cluster_heads=not args.keep_all_cluster_heads,
            work_dir=args.work_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    paths = write_candidate_lists(lists, args.out_dir)

    print(f'{"lexname":<20} {"lines":>7} {"published":>9} {"diff":>8}')
    total = 0
    for name, count, ref, rel in line_count_report(lists):
        total += count
        ref_s = '-' if ref is None else str(ref)
        rel_s = '-' if rel is None else f'{100 * rel:+.2f}%'
        print(f'{name:<20} {count:>7} {ref_s:>9} {rel_s:>8}')
    print(f'{"total":<20} {total:>7}')
    print(f'wrote {len(paths)} files to {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
