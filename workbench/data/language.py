"""Synthetic languages with known structure: a tiny agreement grammar (token ids) and templated English.

``make_tiny_language`` samples from a small probabilistic context-free grammar with number agreement and
nested relative clauses / prepositional phrases, and returns token ids with per-token ground truth (word
class, nesting depth, number). ``make_sentences`` builds templated English sentences (raw strings) with
sentence-level properties (tense, subject number, negation, sentiment, length) for probing real
pretrained text encoders.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_positive_int
from .dataset import Dataset, Split

__all__ = ["make_tiny_language", "make_sentences", "SPECIAL_TOKENS", "WORD_CLASSES", "NUMBERS"]

# ---------------------------------------------------------------------------------------------------------
# Tiny agreement language
# ---------------------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>"]  # ids 0, 1, 2, 3, 4
PAD, BOS, EOS, MASK, UNK = range(5)
WORD_CLASSES = ["special", "det", "adj", "noun", "iverb", "tverb", "prep", "rel"]
NUMBERS = ["sg", "pl", "none"]
SG, PL, NONE = 0, 1, 2

_DET = {SG: ["a", "this", "each", "every"], PL: ["these", "some", "many", "two"], None: ["the"]}
_NOUNS = ["dog", "cat", "bird", "girl", "boy", "teacher", "farmer", "robot", "king", "tree", "house", "car",
          "river", "book", "key", "lamp", "garden", "doctor"]  # plural = noun + "s"
_ADJS = ["big", "small", "red", "old", "happy", "quiet", "green", "tall", "brave", "lazy"]
_IVERBS = [("runs", "run"), ("sleeps", "sleep"), ("sings", "sing"), ("falls", "fall"), ("waits", "wait"),
           ("smiles", "smile"), ("jumps", "jump"), ("swims", "swim")]
_TVERBS = [("sees", "see"), ("chases", "chase"), ("likes", "like"), ("finds", "find"), ("helps", "help"),
           ("follows", "follow"), ("loves", "love"), ("watches", "watch")]
_PREPS = ["near", "behind", "under", "above", "beside", "with"]
_RELS = ["that", "who", "which"]


def _build_vocab() -> tuple[list[str], dict[str, int], dict[str, int]]:
    words: list[tuple[str, str]] = [(w, "special") for w in SPECIAL_TOKENS]
    words += [(w, "det") for w in _DET[None] + _DET[SG] + _DET[PL]]
    words += [(w, "adj") for w in _ADJS]
    words += [(w, "noun") for n in _NOUNS for w in (n, n + "s")]
    words += [(w, "iverb") for pair in _IVERBS for w in pair]
    words += [(w, "tverb") for pair in _TVERBS for w in pair]
    words += [(w, "prep") for w in _PREPS]
    words += [(w, "rel") for w in _RELS]
    vocab = [w for w, _ in words]
    assert len(set(vocab)) == len(vocab)
    return vocab, {w: i for i, w in enumerate(vocab)}, {w: WORD_CLASSES.index(c) for w, c in words}


VOCAB, _WORD_ID, _WORD_CLASS = _build_vocab()


class _Grammar:
    """Sampler for the grammar (``d`` = nesting depth, ``n`` = number, ``limit`` = deepest allowed level)::

        S        -> NP[0, n] VP[0, n]
        NP[d, n] -> Det[n] Adj^k Noun[n] ( Mod[d+1, n] )?     k ~ Geometric, at most 2; Mod only if d < limit
        Mod[d,n] -> Prep NP[d, n']                                 prepositional phrase, any n'
                  | Rel VP[d, n]                                   subject relative: verb agrees with head n
                  | Rel NP[d, n'] TVerb[n']                        object relative: verb agrees with inner NP
        VP[d, n] -> IVerb[n] | TVerb[n] NP[d, n']

    Each token is emitted as ``(word, class, depth, number)``; ``force`` > 0 makes the sampler take a
    modifier chain of exactly that many more levels, so the sentence reaches depth ``limit``.
    """

    def __init__(self, rng: np.random.Generator, limit: int, p_adj: float = 0.2, p_mod: float = 0.35,
                 p_trans: float = 0.5):
        self.rng, self.limit, self.p_adj, self.p_mod, self.p_trans = rng, limit, p_adj, p_mod, p_trans

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def number(self) -> int:
        return int(self.rng.integers(2))

    def sentence(self, force: int) -> tuple[list[tuple[str, int, int, int]], int]:
        n = self.number()
        on_subject = self.rng.random() < 0.5
        out: list[tuple[str, int, int, int]] = []
        self.np(out, 0, n, force if on_subject else 0)
        self.vp(out, 0, n, 0 if on_subject else force)
        return out, n

    def np(self, out, d, n, force):
        det = self.choice(_DET[n] + _DET[None])
        out.append((det, _WORD_CLASS[det], d, n))
        k = 0
        while k < 2 and self.rng.random() < self.p_adj:
            adj = self.choice(_ADJS)
            out.append((adj, _WORD_CLASS[adj], d, n))
            k += 1
        noun = self.choice(_NOUNS) + ("s" if n == PL else "")
        out.append((noun, _WORD_CLASS[noun], d, n))
        if force > 0 or (d < self.limit and self.rng.random() < self.p_mod):
            self.modifier(out, d + 1, n, max(force - 1, 0))

    def modifier(self, out, d, head_n, force):
        kind = int(self.rng.integers(3))
        if kind == 0:  # prepositional phrase
            prep = self.choice(_PREPS)
            out.append((prep, _WORD_CLASS[prep], d, NONE))
            self.np(out, d, self.number(), force)
        elif kind == 1:  # subject relative clause: "the dog that chases the cats"
            rel = self.choice(_RELS)
            out.append((rel, _WORD_CLASS[rel], d, NONE))
            self.vp(out, d, head_n, force)
        else:  # object relative clause: "the dog that the cats chase"
            rel = self.choice(_RELS)
            out.append((rel, _WORD_CLASS[rel], d, NONE))
            n2 = self.number()
            self.np(out, d, n2, force)
            verb = self.choice(_TVERBS)[n2]
            out.append((verb, _WORD_CLASS[verb], d, n2))

    def vp(self, out, d, n, force):
        if force > 0 or self.rng.random() < self.p_trans:
            verb = self.choice(_TVERBS)[n]
            out.append((verb, _WORD_CLASS[verb], d, n))
            self.np(out, d, self.number(), force)
        else:
            verb = self.choice(_IVERBS)[n]
            out.append((verb, _WORD_CLASS[verb], d, n))


def _sample_language(n: int, rng: np.random.Generator, depths: list[int], max_tokens: int, pad_to: int):
    ids = np.zeros((n, pad_to), np.int64)
    attn = np.zeros((n, pad_to), np.int64)
    wclass = np.full((n, pad_to), -1, np.int64)
    depth = np.full((n, pad_to), -1, np.int64)
    number = np.full((n, pad_to), -1, np.int64)
    subj = np.empty(n, np.int64)
    max_depth = np.empty(n, np.int64)
    attractor = np.empty(n, np.int64)
    length = np.empty(n, np.int64)
    for i in range(n):
        target = depths[int(rng.integers(len(depths)))]
        gram = _Grammar(rng, limit=target)
        for _ in range(10_000):
            toks, n_subj = gram.sentence(force=target)
            if len(toks) + 2 <= max_tokens:
                break
        else:  # pragma: no cover - only for absurdly small max_len, caught by validation
            raise RuntimeError("could not sample a sentence short enough")
        toks = [("<bos>", 0, 0, NONE)] + toks + [("<eos>", 0, 0, NONE)]
        L = len(toks)
        ids[i, :L] = [_WORD_ID[t[0]] for t in toks]
        attn[i, :L] = 1
        wclass[i, :L] = [t[1] for t in toks]
        depth[i, :L] = [t[2] for t in toks]
        number[i, :L] = [t[3] for t in toks]
        subj[i] = n_subj
        max_depth[i] = max(t[2] for t in toks)
        length[i] = L
        # attractor: a noun between the subject's head noun and the main verb whose number differs
        main_verb = next(j for j, t in enumerate(toks) if t[2] == 0 and t[1] in (4, 5))
        head = next(j for j, t in enumerate(toks) if t[2] == 0 and t[1] == 3)
        attractor[i] = int(any(t[1] == 3 and t[3] != n_subj for t in toks[head + 1:main_verb]))
    factors = {"word_class": wclass, "depth": depth, "number": number, "subject_number": subj,
               "max_depth": max_depth, "has_attractor": attractor, "length": length.astype(np.float32)}
    return Split(inputs=ids, labels=subj.copy(), factors=factors, attention_mask=attn)


def _min_tokens(depth: int) -> int:
    # bos det noun (3 tokens per level: prep det noun) iverb eos
    return 5 + 3 * depth


def make_tiny_language(n_train: int = 4000, n_test: int = 1000, n_ood: int = 1000, max_len: int = 32,
                       seed: int = 0, max_depth: int = 3, ood_max_len: int | None = None) -> Dataset:
    """Sentences from a small agreement grammar with nested clauses, as padded token ids.

    Grammar (``d`` nesting depth, ``n`` number sg/pl)::

        S        -> NP[0,n] VP[0,n]
        NP[d,n]  -> Det[n] Adj* Noun[n] (Mod[d+1,n])?         (Mod only while d < the sentence's depth)
        Mod[d,n] -> Prep NP[d,n']  |  Rel VP[d,n]  |  Rel NP[d,n'] TVerb[n']
        VP[d,n]  -> IVerb[n]  |  TVerb[n] NP[d,n']

    Determiners ``a this each every`` are singular, ``these some many two`` plural, ``the`` either; plural
    nouns are the singular + ``s``; singular verbs end in ``s`` (``runs`` / ``run``). The main verb agrees
    with the subject's head noun across any relative clause or PP attached to it (agreement attractors).

    Parameters
    ----------
    n_train, n_test, n_ood : int
        Split sizes (``n_test``/``n_ood`` may be 0 to leave the split out).
    max_len : int
        Padded length ``T`` of train/test, including ``<bos>`` and ``<eos>``; longer samples are redrawn.
    seed : int
        Seed; train, test and ood come from independent child streams of ``SeedSequence(seed)``.
    max_depth : int >= 0
        Train/test sentences have a maximum nesting depth drawn uniformly from ``0 .. max_depth``.
    ood_max_len : int, optional
        Padded length of the ood split (default ``2 * max_len``).

    Returns
    -------
    Dataset
        ``kind="tokens"``; inputs int64 ``[N, T]``: ``<bos>`` words ``<eos>`` then ``<pad>`` (id 0);
        ``attention_mask`` 1 on real tokens (incl. bos/eos), 0 on padding. Special ids: ``<pad>`` 0,
        ``<bos>`` 1, ``<eos>`` 2, ``<mask>`` 3 (never emitted; for masked-LM objectives), ``<unk>`` 4
        (never emitted). ``vocab[i]`` is the word of id ``i``.

        **labels = subject number** of the main clause (``class_names = ["singular", "plural"]``).

        Token-level factors ``[N, T]`` (``-1`` on padding):

        - ``word_class``: ``special det adj noun iverb tverb prep rel`` (bos/eos are ``special``).
        - ``depth``: number of modifiers (PP / relative clause) enclosing the token; main clause = 0,
          bos/eos = 0. A modifier's preposition / relative pronoun belongs to the modifier's depth.
        - ``number``: ``sg pl none``: number of the noun phrase for det/adj/noun tokens, agreement number
          for verbs, ``none`` for prep, rel and special tokens.

        Sequence-level factors ``[N]``: ``subject_number`` (= labels), ``max_depth`` (categorical 0 ..
        max_depth+2), ``has_attractor`` (categorical no/yes: a noun of the other number stands between the
        subject head noun and the main verb), ``length`` (continuous, real tokens incl. bos/eos).

        **ood split** (length/depth generalisation): sentences of depth ``max_depth + 1`` or
        ``max_depth + 2`` (deeper than any train sentence, hence longer on average), up to ``ood_max_len``
        tokens and padded to ``T = ood_max_len``, which is longer than train's ``T`` by default.
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    n_ood = check_positive_int(n_ood, "n_ood", minimum=0)
    max_depth = check_positive_int(max_depth, "max_depth", minimum=0)
    max_len = check_positive_int(max_len, "max_len", minimum=1)
    if max_len < _min_tokens(max_depth) + 2:
        raise ValueError(f"max_len={max_len} is too short for max_depth={max_depth} (a depth-{max_depth} "
                         f"sentence has at least {_min_tokens(max_depth)} tokens); use max_len >= "
                         f"{_min_tokens(max_depth) + 2} or a smaller max_depth")
    ood_max_len = 2 * max_len if ood_max_len is None else check_positive_int(ood_max_len, "ood_max_len")
    if n_ood and ood_max_len < _min_tokens(max_depth + 2) + 4:
        raise ValueError(f"ood_max_len={ood_max_len} is too short for depth-{max_depth + 2} ood sentences; use "
                         f"ood_max_len >= {_min_tokens(max_depth + 2) + 4}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")

    streams = np.random.SeedSequence(int(seed)).spawn(3)
    train_depths = list(range(max_depth + 1))
    ood_depths = [max_depth + 1, max_depth + 2]
    splits = {}
    for name, n, ss, depths, T in [("train", n_train, streams[0], train_depths, max_len),
                                   ("test", n_test, streams[1], train_depths, max_len),
                                   ("ood", n_ood, streams[2], ood_depths, ood_max_len)]:
        if n:
            splits[name] = _sample_language(n, np.random.default_rng(ss), depths, T, T)
    depth_values = [str(d) for d in range(max_depth + 3)]
    factor_info = {
        "word_class": {"kind": "categorical", "values": list(WORD_CLASSES), "level": "token"},
        "depth": {"kind": "categorical", "values": depth_values, "level": "token"},
        "number": {"kind": "categorical", "values": list(NUMBERS), "level": "token"},
        "subject_number": {"kind": "categorical", "values": ["singular", "plural"], "level": "sequence"},
        "max_depth": {"kind": "categorical", "values": depth_values, "level": "sequence"},
        "has_attractor": {"kind": "categorical", "values": ["no", "yes"], "level": "sequence"},
        "length": {"kind": "continuous", "level": "sequence", "unit": "tokens incl. <bos>/<eos>"},
    }
    options = dict(n_train=n_train, n_test=n_test, n_ood=n_ood, max_len=max_len, seed=int(seed),
                   max_depth=max_depth, ood_max_len=ood_max_len, special_tokens=list(SPECIAL_TOKENS),
                   pad_id=PAD, bos_id=BOS, eos_id=EOS, mask_id=MASK, unk_id=UNK, label="subject_number")
    return Dataset(name="tiny-language", kind="tokens", splits=splits, class_names=["singular", "plural"],
                   factor_info=factor_info, vocab=list(VOCAB), options=options)


# ---------------------------------------------------------------------------------------------------------
# Templated English sentences
# ---------------------------------------------------------------------------------------------------------

# (singular, plural)
_SUBJECTS = [("teacher", "teachers"), ("child", "children"), ("woman", "women"), ("man", "men"),
             ("doctor", "doctors"), ("student", "students"), ("farmer", "farmers"), ("artist", "artists"),
             ("engineer", "engineers"), ("nurse", "nurses"), ("pilot", "pilots"), ("lawyer", "lawyers"),
             ("chef", "chefs"), ("writer", "writers"), ("singer", "singers"), ("dancer", "dancers"),
             ("driver", "drivers"), ("neighbour", "neighbours"), ("baker", "bakers"),
             ("scientist", "scientists"), ("person", "people"), ("baby", "babies"), ("family", "families"),
             ("girl", "girls"), ("boy", "boys"), ("friend", "friends"), ("soldier", "soldiers"),
             ("king", "kings"), ("queen", "queens"), ("mouse", "mice"), ("fox", "foxes"), ("wolf", "wolves")]
# (base, third person singular, past)
_VERBS = [("build", "builds", "built"), ("buy", "buys", "bought"), ("carry", "carries", "carried"),
          ("clean", "cleans", "cleaned"), ("cook", "cooks", "cooked"), ("draw", "draws", "drew"),
          ("fix", "fixes", "fixed"), ("find", "finds", "found"), ("paint", "paints", "painted"),
          ("grab", "grabs", "grabbed"), ("sell", "sells", "sold"), ("take", "takes", "took"),
          ("wash", "washes", "washed"), ("watch", "watches", "watched"), ("write", "writes", "wrote"),
          ("open", "opens", "opened"), ("catch", "catches", "caught"), ("bring", "brings", "brought"),
          ("throw", "throws", "threw"), ("study", "studies", "studied"), ("visit", "visits", "visited"),
          ("choose", "chooses", "chose"), ("hold", "holds", "held"), ("forget", "forgets", "forgot"),
          ("keep", "keeps", "kept"), ("lose", "loses", "lost"), ("describe", "describes", "described"),
          ("move", "moves", "moved"), ("push", "pushes", "pushed"), ("send", "sends", "sent")]
_OBJECTS = [("letter", "letters"), ("book", "books"), ("car", "cars"), ("box", "boxes"), ("chair", "chairs"),
            ("window", "windows"), ("bicycle", "bicycles"), ("picture", "pictures"), ("door", "doors"),
            ("bag", "bags"), ("map", "maps"), ("table", "tables"), ("phone", "phones"), ("basket", "baskets"),
            ("bottle", "bottles"), ("key", "keys"), ("cup", "cups"), ("knife", "knives"), ("dish", "dishes"),
            ("toy", "toys"), ("lamp", "lamps"), ("ladder", "ladders"), ("coat", "coats"), ("boat", "boats")]
_OBJECT_ADJS = ["old", "small", "red", "heavy", "new", "wooden", "blue", "large", "green", "tiny", "broken",
                "white"]
_SENT_ADJS = {1: ["kind", "cheerful", "brilliant", "friendly", "generous", "honest", "talented", "gentle",
                  "wonderful", "polite"],
              0: ["rude", "lazy", "selfish", "clumsy", "grumpy", "careless", "dishonest", "nasty", "awful",
                  "arrogant"]}
_SENT_ADVS = {1: ["happily", "carefully", "gracefully", "proudly", "cheerfully", "skillfully", "gently",
                  "patiently"],
              0: ["angrily", "carelessly", "clumsily", "lazily", "reluctantly", "rudely", "badly", "sloppily"]}
_SUBJ_PPS = ["from the village", "in the office", "near the river", "at the school", "from the city",
             "in the garden", "next door", "on the farm"]
_DETS = {0: ["the", "a", "this", "my", "our", "that"], 1: ["the", "these", "some", "my", "our", "those",
                                                            "many", "several"]}
_OBJ_DETS = {0: ["the", "a", "this", "that", "her", "his"], 1: ["the", "some", "these", "those", "her", "his"]}
_TIMES = {0: ["yesterday", "last week", "last year", "two days ago", "last night"],
          1: ["every day", "on weekends", "each morning", "every week", "at night"],
          2: ["tomorrow", "next week", "next year", "soon", "later today"]}
_TENSES = ["past", "present", "future"]
_BUCKETS = ["short", "medium", "long"]
_BUCKET_RANGES = {0: (5, 8), 1: (9, 11), 2: (12, 99)}  # word counts (punctuation not counted)


def _bucket_of(n_words: int) -> int:
    return next(b for b, (lo, hi) in _BUCKET_RANGES.items() if lo <= n_words <= hi)


def _verb_group(verb: tuple[str, str, str], tense: int, plural: int, negated: int) -> list[str]:
    base, third, past = verb
    if tense == 0:
        return ["did", "not", base] if negated else [past]
    if tense == 1:
        if negated:
            return ["do" if plural else "does", "not", base]
        return [base if plural else third]
    return ["will", "not", base] if negated else ["will", base]


def _one_sentence(rng: np.random.Generator, tense: int, plural: int, negated: int, sentiment: int,
                  bucket: int) -> list[str]:
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    lo, hi = _BUCKET_RANGES[bucket]
    for _ in range(1000):
        # sentiment is carried by the subject adjective, the adverb, or both (at least one)
        where = int(rng.integers(3))  # 0 adjective, 1 adverb, 2 both
        words = [pick(_DETS[plural])]
        if where in (0, 2):
            words.append(pick(_SENT_ADJS[sentiment]))
        words.append(pick(_SUBJECTS)[plural])
        if rng.random() < 0.4:
            words += pick(_SUBJ_PPS).split()
        words += _verb_group(pick(_VERBS), tense, plural, negated)
        obj_plural = int(rng.integers(2))
        words.append(pick(_OBJ_DETS[obj_plural]))
        if rng.random() < 0.4:
            words.append(pick(_OBJECT_ADJS))
        words.append(pick(_OBJECTS)[obj_plural])
        if where in (1, 2):
            words.append(pick(_SENT_ADVS[sentiment]))
        if rng.random() < 0.5:
            words += pick(_TIMES[tense]).split()
        if lo <= len(words) <= hi:
            return words
    raise AssertionError("could not reach the length bucket")  # pragma: no cover


def make_sentences(n_train: int = 1000, n_test: int = 300, seed: int = 0) -> Dataset:
    """Templated English sentences with known tense, number, negation, sentiment and length.

    Template: ``Det [SentAdj] Subject [PP] VerbGroup ObjDet [Adj] Object [SentAdv] [TimePhrase].``
    (32 subject nouns incl. irregular plurals, 30 transitive verbs with correct 3rd-person, past and
    irregular forms, 24 objects, 20 sentiment adjectives, 16 sentiment adverbs, tense-consistent time
    phrases). Properties are drawn independently and uniformly, then the optional slots are filled so the
    word count falls in the chosen length bucket. Determiners such as ``the``/``my``/``our`` do not mark
    number, and the verb group only marks number in the affirmative/negated present.

    Parameters
    ----------
    n_train, n_test : int
        Split sizes (``n_test`` may be 0).
    seed : int
        Seed; train and test come from independent child streams of ``SeedSequence(seed)``.

    Returns
    -------
    Dataset
        ``kind="text"``; inputs numpy object array of ``str`` (one sentence each, capitalised, ending in
        ``.``). **labels = tense** (``class_names = ["past", "present", "future"]``). Sequence-level
        categorical factors ``[N]``:

        - ``tense``: past / present / future (= labels).
        - ``subject_number``: singular / plural (of the subject noun).
        - ``negation``: affirmative / negated (``did not``, ``do(es) not``, ``will not``).
        - ``sentiment``: negative / positive (polarity of the evaluative subject adjective and/or adverb;
          the rest of the sentence is neutral).
        - ``length_bucket``: short (<= 8 words) / medium (9-11) / long (12+), words split on whitespace.

        Plus ``n_words`` (continuous). No ood split.
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")

    def build(n: int, rng: np.random.Generator) -> Split:
        f = {k: rng.integers(0, m, n).astype(np.int64) for k, m in
             [("tense", 3), ("subject_number", 2), ("negation", 2), ("sentiment", 2), ("length_bucket", 3)]}
        texts = np.empty(n, dtype=object)
        n_words = np.empty(n, np.float32)
        for i in range(n):
            words = _one_sentence(rng, int(f["tense"][i]), int(f["subject_number"][i]), int(f["negation"][i]),
                                  int(f["sentiment"][i]), int(f["length_bucket"][i]))
            words = [("an" if w == "a" and (nxt[0] in "aeiou" or nxt == "honest") else w)
                     for w, nxt in zip(words, words[1:] + [""])]
            text = " ".join(words) + "."
            texts[i] = text[0].upper() + text[1:]
            n_words[i] = len(words)
        f["n_words"] = n_words
        return Split(inputs=texts, labels=f["tense"].copy(), factors=f)

    streams = np.random.SeedSequence(int(seed)).spawn(2)
    splits = {"train": build(n_train, np.random.default_rng(streams[0]))}
    if n_test:
        splits["test"] = build(n_test, np.random.default_rng(streams[1]))
    factor_info = {
        "tense": {"kind": "categorical", "values": list(_TENSES)},
        "subject_number": {"kind": "categorical", "values": ["singular", "plural"]},
        "negation": {"kind": "categorical", "values": ["affirmative", "negated"]},
        "sentiment": {"kind": "categorical", "values": ["negative", "positive"]},
        "length_bucket": {"kind": "categorical", "values": list(_BUCKETS),
                          "word_ranges": {"short": [5, 8], "medium": [9, 11], "long": [12, None]}},
        "n_words": {"kind": "continuous", "unit": "words"},
    }
    return Dataset(name="sentences", kind="text", splits=splits, class_names=list(_TENSES),
                   factor_info=factor_info, options=dict(n_train=n_train, n_test=n_test, seed=int(seed),
                                                         label="tense"))
