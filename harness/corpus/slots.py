"""Spoken requests with slots, after SNIPS (Coucke et al. 2018, "Snips Voice Platform"), the
text of Audio SNIPS (SUPERB SF): the seven SNIPS intents, each with its real slot names, and
templates whose placeholders are filled with slot values (playlists, artists, cities, times,
dishes, ratings, titles ...).

A request is a word list and one tag per word: the slot name for words of a slot value,
``O`` otherwise, as s3prl's Audio SNIPS transcripts tag them (its tokenizer derives the
begin/end markers from runs of one tag, so two values of the same slot are never adjacent in
a template). Words are lower-case ASCII letters only, so espeak says each one as written.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from harness.corpus.draws import channel as draw_channel
from harness.corpus.draws import jitter as draw_jitter
from harness.corpus.layout import SNIPS_DIR
from harness.fsutil import write_text

_FIRST = ("john", "mary", "david", "sarah", "james", "linda", "peter", "laura", "frank", "nina", "oscar", "ella",
          "miles", "grace", "henry", "alice", "victor", "ruby", "leo", "iris")
_LAST = ("smith", "brown", "taylor", "davis", "miller", "wilson", "moore", "clark", "lewis", "young", "hill", "green",
         "baker", "king", "wright", "scott", "parker", "reed", "hayes", "cole")
_ADJECTIVES = ("silent", "golden", "broken", "hidden", "blue", "wild", "lonely", "electric", "distant", "secret",
               "burning", "frozen", "velvet", "crystal", "midnight", "paper", "sweet", "little", "endless", "northern")
_NOUNS = ("river", "heart", "city", "garden", "dream", "road", "sky", "fire", "moon", "ocean", "letter", "mirror",
          "forest", "stranger", "window", "thunder", "island", "shadow", "summer", "train")

#: slot name -> its values (a value may be several words); "@person" and "@title" are drawn
_VALUES: dict[str, tuple[str, ...]] = {
    "artist": ("@person",),
    "entity_name": ("@title",),
    "track": ("@title",),
    "album": ("@title",),
    "object_name": ("@title",),
    "movie_name": ("@title",),
    "restaurant_name": ("@title",),
    "playlist": ("chill", "summer hits", "morning coffee", "road trip", "workout mix", "dinner party", "rainy day",
                 "late night", "happy tunes", "quiet evening", "study session", "sunday classics", "throwback jams"),
    "playlist_owner": ("my", "our", "her", "his"),
    "music_item": ("song", "track", "album", "tune", "record"),
    "city": ("paris", "london", "boston", "chicago", "denver", "seattle", "madrid", "berlin", "tokyo", "dallas",
             "austin", "portland", "atlanta", "houston", "phoenix", "miami", "toronto", "sydney", "dublin", "vienna",
             "prague", "oslo", "rome", "lisbon"),
    "state": ("texas", "ohio", "oregon", "utah", "florida", "georgia", "maine", "nevada", "vermont", "kansas", "iowa",
              "alaska"),
    "country": ("france", "spain", "italy", "canada", "mexico", "japan", "brazil", "norway", "egypt", "peru", "chile",
                "india"),
    "timeRange": ("today", "tomorrow", "tonight", "next week", "this weekend", "next friday", "on monday",
                  "in two hours", "at noon", "this evening", "next month", "in three days", "on sunday morning",
                  "at eight in the morning"),
    "condition_description": ("rain", "snow", "fog", "sunshine", "clouds", "wind", "storms", "hail"),
    "condition_temperature": ("hot", "cold", "warm", "chilly", "freezing", "humid"),
    "current_location": ("here", "around here", "where i am", "in my area"),
    "spatial_relation": ("near", "close to", "around", "next to", "far from"),
    "geographic_poi": ("the grand canyon", "lake michigan", "mount rainier", "the rocky mountains", "niagara falls"),
    "poi": ("the museum", "the train station", "the stadium", "the airport", "my office"),
    "restaurant_type": ("restaurant", "bar", "pub", "cafe", "diner", "bistro", "steakhouse", "pizzeria", "tavern"),
    "cuisine": ("italian", "french", "thai", "mexican", "indian", "greek", "chinese", "japanese", "korean",
                "spanish"),
    "party_size_number": ("two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve"),
    "party_size_description": ("me and my wife", "my family", "my friends and me", "the whole team", "my parents"),
    "served_dish": ("pasta", "sushi", "tacos", "soup", "curry", "steak", "salad", "noodles", "pizza", "dumplings",
                    "pancakes"),
    "sort": ("best", "top rated", "most popular", "cheapest", "newest"),
    "facility": ("outdoor seating", "parking", "a terrace", "live music", "a private room"),
    "genre": ("jazz", "blues", "rock", "pop", "folk", "soul", "funk", "reggae", "country", "metal", "disco",
              "classical"),
    "service": ("spotify", "pandora", "deezer", "youtube", "napster"),
    "year": ("the eighties", "the seventies", "the sixties", "nineteen ninety", "two thousand ten"),
    "object_select": ("this", "the current", "that"),
    "object_type": ("book", "novel", "essay", "textbook", "album", "song", "movie", "television show", "game",
                    "painting", "soundtrack"),
    "rating_value": ("one", "two", "three", "four", "five", "six"),
    "best_rating": ("five", "six", "ten"),
    "rating_unit": ("stars", "points"),
    "object_part_of_series_type": ("series", "saga", "trilogy", "chronicle"),
    "movie_type": ("animated movies", "films", "movies", "documentaries", "comedies"),
    "object_location_type": ("movie theater", "cinema", "movie house"),
    "location_name": ("@last cinemas", "@last theater", "@last picture house"),
}

#: SNIPS's seven intents and templates over their slots
TEMPLATES: dict[str, tuple[str, ...]] = {
    "AddToPlaylist": (
        "add {artist} to {playlist_owner} {playlist} playlist",
        "add this {music_item} to {playlist_owner} {playlist} playlist",
        "put {entity_name} by {artist} on the {playlist} playlist",
        "i want to add {entity_name} to {playlist_owner} playlist {playlist}",
        "add the {music_item} {entity_name} to {playlist}",
        "include {artist} in {playlist_owner} {playlist} list",
    ),
    "BookRestaurant": (
        "book a table for {party_size_number} at a {restaurant_type} in {city}",
        "reserve a {restaurant_type} for {party_size_number} people {timeRange}",
        "book a {sort} {cuisine} {restaurant_type} in {state} for {party_size_description}",
        "i need a table at {restaurant_name} {timeRange}",
        "find a {restaurant_type} that serves {served_dish} {spatial_relation} {poi}",
        "book a {restaurant_type} with {facility} in {country} for {party_size_number}",
    ),
    "GetWeather": (
        "what is the weather in {city} {timeRange}",
        "will it be {condition_temperature} in {state} {timeRange}",
        "is there going to be {condition_description} {current_location}",
        "tell me the forecast for {country} {timeRange}",
        "will there be {condition_description} {spatial_relation} {geographic_poi}",
        "how {condition_temperature} will it be in {city}",
    ),
    "PlayMusic": (
        "play {artist} on {service}",
        "play some {genre} music",
        "play the {music_item} {track} by {artist}",
        "play {sort} songs from {year}",
        "play the album {album} on {service}",
        "listen to the {playlist} playlist",
        "play music from {year} by {artist}",
    ),
    "RateBook": (
        "rate {object_select} {object_type} {rating_value} out of {best_rating}",
        "give {object_name} {rating_value} {rating_unit}",
        "rate the {object_part_of_series_type} {object_name} {rating_value} {rating_unit}",
        "i give {object_select} {object_type} a rating of {rating_value} out of {best_rating}",
        "give {rating_value} out of {best_rating} to {object_name}",
    ),
    "SearchCreativeWork": (
        "find the {object_type} called {object_name}",
        "search for {object_name}",
        "show me the {object_type} {object_name}",
        "i am looking for a {object_type} named {object_name}",
        "where can i find the {object_type} {object_name}",
    ),
    "SearchScreeningEvent": (
        "find {movie_type} playing at the {object_location_type} {timeRange}",
        "show me the movie times for {location_name}",
        "when is {movie_name} playing {timeRange}",
        "what {movie_type} are showing {spatial_relation} {location_name}",
        "is {movie_name} playing at the {object_location_type}",
        "find the schedule for {movie_name} {timeRange}",
    ),
}
INTENTS = tuple(TEMPLATES)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def slot_names() -> list[str]:
    """Every slot name the templates use, sorted."""
    return sorted({m for t in TEMPLATES.values() for line in t for m in _PLACEHOLDER.findall(line)})


def _value(slot: str, rng: np.random.Generator) -> str:
    pool = _VALUES[slot]
    value = pool[int(rng.integers(len(pool)))]
    if value == "@person":
        return f"{_FIRST[int(rng.integers(len(_FIRST)))]} {_LAST[int(rng.integers(len(_LAST)))]}"
    if value == "@title":
        adjective, noun = _ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))], _NOUNS[int(rng.integers(len(_NOUNS)))]
        return f"the {adjective} {noun}" if rng.random() < 0.5 else f"{adjective} {noun}"
    if value.startswith("@last"):
        return _LAST[int(rng.integers(len(_LAST)))] + value[len("@last"):]
    return value


def sample_request(intent: str, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """One request of ``intent``: (words, one tag per word: a slot name or ``O``)."""
    templates = TEMPLATES[intent]
    template = templates[int(rng.integers(len(templates)))]
    words: list[str] = []
    tags: list[str] = []
    for token in template.split():
        m = _PLACEHOLDER.fullmatch(token)
        if m is None:
            words.append(token)
            tags.append("O")
            continue
        value = _value(m.group(1), rng).split()
        words += value
        tags += [m.group(1)] * len(value)
    return words, tags


# ------------------------------------------------------------------- Audio SNIPS layout
SNIPS_SPLITS = ("train", "valid", "test")
TRANSCRIPTS = "all.iob.snips.txt"
SLOTS = "slots.txt"


def speaker_name(index: int) -> str:
    """A speaker's name in file ids (``NAME-snips-SPLIT-N``); fixed width, so no name is a prefix
    of another (s3prl's first reader matches speakers by prefix)."""
    return f"Voice{index:03d}"


def snips_jobs(profile, rng: np.random.Generator, candidates: int) -> list[dict]:
    """Audio SNIPS: speaker-disjoint train/valid/test speakers (SUPERB uses 8/4/4 of the 16
    voices), each saying ``snips_utts_per_speaker`` requests; intents cycle through the seven so
    every split has all of them. Each job carries ``candidates`` requests of its intent (tried in
    order if espeak's words cannot be aligned) with their tags."""
    order = [int(i) for i in rng.permutation(profile.speakers)]
    intents = [INTENTS[int(i)] for i in rng.permutation(len(INTENTS))]
    jobs: list[dict] = []
    first = 0
    for split, n_speakers, per_speaker in zip(SNIPS_SPLITS, profile.snips_split_speakers,
                                              profile.snips_utts_per_speaker):
        members, first = order[first:first + n_speakers], first + n_speakers
        number = 0
        for spk in members:
            channel = draw_channel(rng)
            for _ in range(per_speaker):
                intent = intents[number % len(intents)]
                requests = [sample_request(intent, rng) for _ in range(candidates)]
                uid = f"{speaker_name(spk)}-snips-{split}-{number}"
                jobs.append({
                    "corpus": "snips", "split": split, "utt": uid, "speaker": spk, "path": f"{SNIPS_DIR}/{split}/{uid}.wav",
                    "texts": [" ".join(words) for words, _ in requests], "tags": [" ".join(t) for _, t in requests],
                    "intent": intent, "jitter": draw_jitter(rng), "channel": channel,
                    "noise_seed": int(rng.integers(2**31)), "format": "WAV",
                })
                number += 1
    return jobs


def write_snips_index(folder: Path, jobs: list[dict], records: dict[str, dict]) -> dict:
    """``all.iob.snips.txt`` (``ID BOS WORDS EOS<TAB>O TAGS INTENT``, upper-case words, one tag per
    word: s3prl's ``snips_preprocess.py`` form) and ``slots.txt`` (every tag, most frequent first,
    so ``O`` heads it as s3prl's first reader expects). Returns counts for the corpus summary."""
    order = {split: k for k, split in enumerate(("test", "valid", "train"))}  # the real file's order
    lines, counts = [], Counter()
    key = lambda j: (order[j["split"]], j["utt"].split("-")[0], int(j["utt"].rsplit("-", 1)[1]))  # noqa: E731
    for job in sorted(jobs, key=key):
        text = records[job["utt"]]["text"]
        tags = job["tags"][job["texts"].index(text)]
        counts.update(tags.split())
        lines.append(f"{job['utt']} BOS {text.upper()} EOS\tO {tags} {job['intent']}")
    write_text(folder / TRANSCRIPTS, "\n".join(lines) + "\n")
    write_text(folder / SLOTS, "\n".join(sorted(counts, key=lambda t: (-counts[t], t))))
    return {"utterances": len(lines), "intents": len({j["intent"] for j in jobs}), "slot_types": len(counts) - 1}
