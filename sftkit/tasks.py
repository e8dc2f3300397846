"""Built-in verifiable chat tasks: conversations whose answers can be checked exactly.

The offline demo needs a task that a small pretrained model cannot do out of the box, that
LoRA SFT can teach in minutes on a CPU, and whose success is measured rather than eyeballed.
Each generated example carries its task name and expected answer, and `check_answer` scores
a model's reply per task.

Design choices, each made so the gain is *generalisation*, not memorisation:

- Train and test are disjoint by construction: names, words and number pairs are split into
  train and test pools before any conversation is generated.
- Letters are spelled out ("m a r i a") for the letter-level tasks. BPE hides the letters of
  a word inside one token, so "reverse Maria" asks a 135M model to know the spelling of every
  token; in a probe, LoRA memorised 160 training names (loss 0.01) yet reversed 1 of 32
  held-out ones. Spelled out, each letter is a token and the skill can transfer.
- Prompts are phrased in a few ways so the model learns the instruction, not one string.

Tasks: ``reverse`` (a spelled name backwards), ``vowels`` (count the vowels of a spelled
word), ``add`` (two 2-3 digit numbers), ``upper`` (repeat a phrase in upper case), ``json``
(extract a value into a JSON object with a given key) and ``recall`` (a two-turn task whose
second answer depends on the first turn).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Callable

TASKS = ("reverse", "vowels", "add", "upper", "json", "recall")
VOWELS = set("aeiou")

# Short, common first names (letters only), so spelled forms stay short.
NAMES = (
    "adam alan alex alice amber amir amy ana andre anna arlo asha ava basil bea ben beth bianca "
    "boris brian bruno cara carl carlos cecil chloe clara cleo colin dana dante daria david dean "
    "diego dina dora drew eden edgar elena eli elise ella emil emma eric erin eva evan ezra fatima "
    "felix fern fiona frank freya gabe gail gemma gina grace greta hana hank hazel hector heidi "
    "henry hugo ian ida igor ines iris isaac ivan ivy jack jade jake jana jasper jay jean jin joan "
    "joel john jonas jose joy juan jude julia june kai kara karl kate keira ken kim kira kurt "
    "lana lara leah lena leo lewis liam lila lily lina lisa liam lola lucas lucy luis luke luna "
    "maya mia mila milo mina miro mona nadia nala nate nell nico nina noah nora olga olive omar "
    "oscar otto owen paula pedro pia quinn rafael rami ray rena rex rhea rita rosa ross ruby rudy "
    "ruth ryan sade sam sara sean seth silas sofia stella sven tara ted tess theo tia tim tina "
    "tomas una uma vera vic viola wade walt wanda will xena yara yuki yusuf zack zara zoe "
    "abel ada aida alba alma anya aria arun asa axel bao bela bilal bo cai cyra cody dara demi "
    "dev dion duke ebba edie elif elsa enzo esra ethan ewan faye finn flora gia gus hadi hale "
    "hiro hope ilse inez iona isla ivo jai jalen joni kade kamal kaya kenji kofi lars leon levi "
    "lian lior lorna lou luka mae malik mara mateo max maxim meera mira moe nadir neil nia nika "
    "nils noor odin oona orla pablo perla pip raj reza rina roman rumi saba sami sana selma shay "
    "sina soren suki tao teo thea tobias toni uri vada vlad wren xavi yael yan yves zain zeno "
    "ziva zola"
).split()

# Everyday words for the vowel and upper-case tasks.
WORDS = (
    "apple bread chair dance eagle field glass house island juice kite lemon money night ocean "
    "paper queen river stone table uncle voice water young zebra actor baker candle dinner earth "
    "flower garden honey ink jacket kettle ladder market needle orange pencil rabbit salad tiger "
    "umbrella violin window yellow basket button carpet doctor engine forest guitar hammer jungle "
    "kitchen lizard mirror number pepper rocket silver tomato valley winter branch cloud desert "
    "feather bridge castle dragon planet sugar train cotton lamp music bottle camera garlic pillow "
    "spoon blanket letter morning summer storm cookie puzzle coffee school travel butter shadow "
    "cherry farmer helmet parrot ticket wallet marble candy monkey pocket rain snow wind beach "
    "cabin clock plant shell sock trumpet wagon piano radio tunnel circle anchor button canvas "
    "meadow pebble saddle tablet whistle violet walnut harbor lantern"
).split()

# Hundreds of cities (and names) so that the JSON task teaches re-spelling: ' Dubai' is one
# token in a sentence but '"Dub' + 'ai' after a quote, and with a few dozen training cities
# a 135M model memorised their quoted spellings and invented the rest ("Dubai" -> "Dubrode").
# New items are appended: an item's split is fixed by its index in the list.
CITIES = (
    "Paris Lyon Berlin Madrid Rome Lisbon Vienna Prague Oslo Dublin Athens Warsaw Cairo Lima "
    "Tokyo Seoul Delhi Nairobi Boston Denver Austin Chicago Toronto Sydney Perth Milan Naples "
    "Porto Seville Munich Zurich Geneva Bergen Krakow Kyoto Osaka Quito Bogota Havana Dakar "
    "Accra Lagos Tunis Rabat Algiers Amman Beirut Doha Dubai Muscat Tehran Kabul Lahore Dhaka "
    "Hanoi Manila Jakarta Bangkok Taipei Shanghai Beijing Busan Sapporo Auckland Hobart Darwin "
    "Adelaide Brisbane Vancouver Calgary Ottawa Montreal Quebec Halifax Seattle Portland Phoenix "
    "Dallas Houston Miami Atlanta Detroit Memphis Nashville Orlando Tampa Santiago Caracas Recife "
    "Salvador Cordoba Rosario Leeds Bristol Glasgow Cardiff Belfast Cork Galway Antwerp Ghent "
    "Utrecht Leiden Bremen Hamburg Dresden Leipzig Cologne Bonn Graz Salzburg Brno Gdansk Vilnius "
    "Riga Tallinn Helsinki Turku Uppsala Malmo Aarhus Odense Split Zagreb Sofia Varna Bucharest "
    "Abuja Kampala Kigali Lusaka Harare Maputo Luanda Windhoek Gaborone Durban Mombasa Khartoum "
    "Tripoli Benghazi Oran Fez Marrakesh Tangier Casablanca Alexandria Luxor Aswan Jeddah Riyadh "
    "Medina Kuwait Manama Basra Mosul Erbil Aleppo Damascus Haifa Ankara Izmir Antalya Bursa "
    "Tbilisi Yerevan Baku Tashkent Almaty Bishkek Dushanbe Karachi Multan Quetta Mumbai Pune "
    "Chennai Kolkata Jaipur Agra Lucknow Kochi Colombo Kandy Kathmandu Thimphu Yangon Mandalay "
    "Vientiane Saigon Hue Cebu Davao Surabaya Bandung Medan Penang Ipoh Singapore Macau Wuhan "
    "Xian Chengdu Nanjing Tianjin Harbin Dalian Qingdao Incheon Daegu Nagoya Kobe Sendai Fukuoka "
    "Hiroshima Nara Canberra Cairns Geelong Wellington Dunedin Suva Honolulu Anchorage Boise "
    "Tucson Omaha Wichita Tulsa Denton Reno Fresno Oakland Sacramento Spokane Eugene Madison "
    "Milwaukee Toledo Dayton Akron Buffalo Albany Hartford Newark Trenton Richmond Norfolk "
    "Raleigh Durham Savannah Jackson Louisville Lexington Regina Winnipeg Edmonton Victoria "
    "Hamilton Windsor Moncton Monterrey Puebla Oaxaca Merida Cancun Tijuana Managua Panama "
    "Medellin Cali Cusco Arequipa Sucre Asuncion Montevideo Mendoza Valparaiso Manaus Belem "
    "Fortaleza Curitiba Natal Lille Nantes Bordeaux Toulouse Marseille Grenoble Dijon Rennes "
    "Reims Brest Nancy Bilbao Valencia Malaga Granada Zaragoza Murcia Braga Faro Coimbra Turin "
    "Genoa Bologna Florence Verona Padua Pisa Bari Palermo Catania Trieste Basel Bern Lausanne "
    "Lucerne Lugano Linz Innsbruck Munster Kiel Mainz Essen Dortmund Hanover Stuttgart Nuremberg "
    "Augsburg Freiburg Rostock Poznan Lodz Lublin Wroclaw Szeged Debrecen Budapest Kosice Ostrava "
    "Plzen Ljubljana Sarajevo Belgrade Skopje Tirana Podgorica Patras Larissa Thessaloniki "
    "Nicosia Valletta Reykjavik Tromso Trondheim Stavanger Gothenburg Lund Espoo Tampere Oulu "
    "Tartu Kaunas Minsk Kyiv Lviv Odesa Kharkiv Chisinau Iasi Cluj Plovdiv Burgas Aberdeen Dundee "
    "Inverness York Oxford Cambridge Norwich Exeter Plymouth Swansea Derry Limerick Sligo Bruges "
    "Namur Liege Eindhoven Groningen Delft Haarlem Nijmegen Arnhem Maastricht Luxembourg"
).split()

# Upper case needs the capitalised form of every word; a 135M model knows it for common
# words and invents it for rarer ones ("VIOLIN" -> "VOLON"), so the task sticks to these.
COMMON_OBJECTS = (
    "book door ball car tree house water bread milk apple chair table cup box bag hat shoe coat "
    "key pen bed bike boat bird fish cake door road map phone lamp desk ring rock sand shop star"
).split()

PHRASES_SUBJECTS = ("the cat", "my brother", "our teacher", "a small dog", "the old man", "her friend",
                    "my sister", "the farmer", "a tall girl", "his uncle")
PHRASES_VERBS = ("likes", "found", "painted", "cleaned", "carried", "wanted", "sold", "opened", "lost", "moved")


SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TaskPools:
    """Disjoint pools of names, words and cities for one split."""

    names: tuple[str, ...]
    words: tuple[str, ...]
    cities: tuple[str, ...]
    split: str


def _bucket(index: int) -> str:
    # A fixed, seed-free partition, so no pool changes with the seed and none can leak into
    # another: one item in four is test, one in eight is dev (for choosing designs and
    # hyperparameters without looking at test), the other five in eight are train.
    if index % 4 == 0:
        return "test"
    return "dev" if index % 8 == 2 else "train"


def _split_pool(items: tuple[str, ...] | list[str], split: str) -> tuple[str, ...]:
    ordered = sorted(set(items))
    return tuple(x for i, x in enumerate(ordered) if _bucket(i) == split)


def _pools(split: str) -> TaskPools:
    return TaskPools(
        names=_split_pool(NAMES, split),
        words=_split_pool(WORDS, split),
        cities=_split_pool(CITIES, split),
        split=split,
    )


def _split_of_code(code: int) -> str:
    # For items held out by a stable hash (number pairs, sentences): of the ten values of
    # code % 10, two are test (one in five), one is dev (one in ten), the rest train.
    code %= 10
    return "test" if code % 5 == 0 else ("dev" if code == 1 else "train")


def _pair_split(a: int, b: int) -> str:
    # Number pairs are held out by a fixed rule on the pair itself.
    return _split_of_code(a * 31 + b * 17)


def spell(word: str) -> str:
    """'maria' -> 'm a r i a': one token per letter for BPE tokenizers."""
    return " ".join(word)


# --------------------------------------------------------------------------- generators
# Each returns (messages, answer). The answer is what `check_answer` compares against.


def reverse_steps(name: str) -> str:
    """'cecil' -> 'Letters: 1 c, 2 e, 3 c, 4 i, 5 l. Backwards: 5 l, 4 i, 3 c, 2 e, 1 c. Answer: l i c e c'.

    Numbering the letters turns reversal into two moves a small transformer makes easily: a
    left-to-right scan (copy the next letter, add one) and a look-up by number while
    counting down. Without it, a 135M model learns to start at the last letter but loses
    its place on the way back (a probe here: 0.06-0.19 exact match on held-out names).
    """
    numbered = [f"{i} {c}" for i, c in enumerate(name, start=1)]
    return f"Letters: {', '.join(numbered)}. Backwards: {', '.join(reversed(numbered))}. Answer: {spell(name[::-1])}"


def _reverse(rng: random.Random, pools: TaskPools) -> tuple[list[dict], str]:
    name = rng.choice(pools.names)
    prompt = rng.choice(
        (
            "Reverse the letters of this name: {s}",
            "Write these letters in reverse order: {s}",
            "Spell this name backwards, letter by letter: {s}",
        )
    ).format(s=spell(name))
    return ([{"role": "user", "content": prompt}, {"role": "assistant", "content": reverse_steps(name)}],
            spell(name[::-1]))


def _vowels(rng: random.Random, pools: TaskPools) -> tuple[list[dict], str]:
    word = rng.choice(pools.words)
    prompt = rng.choice(
        (
            "How many vowels are in the word spelled {s}?",
            "Count the vowels (a, e, i, o, u) in: {s}",
            "Letters: {s}. How many of them are vowels?",
        )
    ).format(s=spell(word))
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": vowel_steps(word)}], str(
        sum(c in VOWELS for c in word)
    )


def vowel_steps(word: str) -> str:
    """'storm' -> 's no, t no, o yes 1, r no, m no. Count: 1'.

    One clause per letter, in order, with the running count on each vowel: the model copies
    the next letter, classifies it, and increments a number, instead of picking vowels out of
    the whole word at once (which it does badly: it invents or skips vowels).
    """
    clauses, count = [], 0
    for letter in word:
        if letter in VOWELS:
            count += 1
            clauses.append(f"{letter} yes {count}")
        else:
            clauses.append(f"{letter} no")
    return f"{', '.join(clauses)}. Count: {count}"


PLACES = ("ones", "tens", "hundreds")


def addition_steps(a: int, b: int) -> str:
    """Column addition, each digit named by its place, read from the right.

    '89 + 848' -> '89: ones 9, tens 8, hundreds 0. 848: ones 8, tens 4, hundreds 8.
    Ones: 9 + 8 = 17, write 7, carry 1. Tens: 8 + 4 = 12, 12 + 1 = 13, write 3, carry 1.
    Hundreds: 0 + 8 = 8, 8 + 1 = 9, write 9, carry 0. Answer: 937'

    Every choice answers a failure measured on held-out sums (SmolLM2-135M-Instruct, LoRA in
    the top 15 blocks, 320 training sums, 48 dev sums; `dev/LOG.md`):
    - digits are named from the *right* ("ones" is the digit just before the colon), because
      counting from the left made the model read "89" as "8 hundreds, 9 tens, 8 ones";
    - each column first adds two digits the way the pretrained model has seen sums written,
      "8 + 4 = 12". Asked 4-shot, before any training, it completes "x + y = " correctly for
      73% of the 100 digit pairs, but only 21% when the sum is written with two digits
      ("= 07") and 13% for three terms ("x + y + c = ", c 0 or 1). An earlier format used those
      two forms ("8 + 4 + 1 = 13", "0 + 8 + 1 = 09"): after training, 26-37% of its column
      sums were still wrong and 0.17 of the sums came out right; this format: 2% and 0.63;
    - the carry is then added as a step of its own in every column after the first, also when
      it is 0 ("12 + 0 = 12"): when the step appeared only after a carry, the model left it
      out and lost the carry;
    - "write d, carry c" splits the column total, and the answer reads the written digits
      back from the hundreds down: each is a look-up by place name.
    """
    def named(n: int) -> str:
        return f"{n}: " + ", ".join(f"{place} {(n // 10 ** i) % 10}" for i, place in enumerate(PLACES))

    clauses, carry = [], 0
    for i, place in enumerate(PLACES):
        x, y = (a // 10 ** i) % 10, (b // 10 ** i) % 10
        digits = x + y
        total = digits + carry
        step = f"{x} + {y} = {digits}" + (f", {digits} + {carry} = {total}" if i else "")
        clauses.append(f"{place.capitalize()}: {step}, write {total % 10}, carry {total // 10}")
        carry = total // 10
    return f"{named(a)}. {named(b)}. " + ". ".join(clauses) + f". Answer: {a + b}"


def _add(rng: random.Random, pools: TaskPools) -> tuple[list[dict], str]:
    while True:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        if _pair_split(a, b) == pools.split:
            break
    prompt = rng.choice(
        (
            "What is {a} + {b}?",
            "Add {a} and {b}.",
            "Compute {a} plus {b}.",
        )
    ).format(a=a, b=b)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": addition_steps(a, b)}], str(a + b)


def _upper(rng: random.Random, pools: TaskPools) -> tuple[list[dict], str]:
    # Held out by *sentence*, not by word: upper-casing a word means knowing how its capitalised
    # form is tokenized, which a 135M model knows for common words only. The splits share the
    # word list; no test or dev sentence occurs in training (see `_sentence_split`).
    while True:
        phrase = f"{rng.choice(PHRASES_SUBJECTS)} {rng.choice(PHRASES_VERBS)} the {rng.choice(COMMON_OBJECTS)}"
        if _sentence_split(phrase) == pools.split:
            break
    prompt = rng.choice(
        (
            "Repeat this sentence in upper case: {p}",
            "Rewrite in capital letters only: {p}",
            "Convert to upper case: {p}",
        )
    ).format(p=phrase)
    answer = phrase.upper()
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], answer


def _sentence_split(sentence: str) -> str:
    # A stable hash (Python's own is salted per process).
    return _split_of_code(sum(ord(c) * (i + 1) for i, c in enumerate(sentence)))


JSON_QUESTIONS = {"name": "Who is the person", "city": "Which city is it", "age": "How old is the person"}


def _json(rng: random.Random, pools: TaskPools) -> tuple[list[dict], str]:
    # Three fields in every sentence, one asked for: the model has to pick the right one and
    # copy it into the object. Names and cities come from the split's pools; a name or city
    # copied into JSON is tokenized differently ('"Cardiff' is '"', 'Card', 'iff'; in the
    # sentence it is one token, ' Cardiff'), which is part of what makes the task hard.
    name, city, age = rng.choice(pools.names).capitalize(), rng.choice(pools.cities), rng.randint(18, 90)
    key = rng.choice(tuple(JSON_QUESTIONS))
    sentence = rng.choice(
        (
            "{n}, aged {a}, lives in {c}.",
            "Last year {n} moved to {c} at the age of {a}.",
            "{n} was born in {c} and is {a} years old.",
        )
    ).format(n=name, c=city, a=age)
    prompt = f'Answer as JSON with the single key "{key}". {JSON_QUESTIONS[key]}? Text: {sentence}'
    answer = json.dumps({key: {"name": name, "city": city, "age": age}[key]})
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], answer


def _recall(rng: random.Random, pools: TaskPools) -> tuple[list[dict], str]:
    name = rng.choice(pools.names).capitalize()
    word = rng.choice(pools.words)
    first = f"My pet is called {name} and my favourite thing is a {word}. Please remember that."
    ack = f"Got it: your pet is {name} and your favourite thing is a {word}."
    ask_name = rng.random() < 0.5
    second = (
        "What is my pet called? Answer with the name only."
        if ask_name
        else "What is my favourite thing? Answer with one word only."
    )
    answer = name if ask_name else word
    messages = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": ack},
        {"role": "user", "content": second},
        {"role": "assistant", "content": answer},
    ]
    return messages, answer


GENERATORS: dict[str, Callable[[random.Random, TaskPools], tuple[list[dict], str]]] = {
    "reverse": _reverse,
    "vowels": _vowels,
    "add": _add,
    "upper": _upper,
    "json": _json,
    "recall": _recall,
}


# Shares of the training cycle, chosen on the dev split: reversal (the longest to learn) four,
# vowel counting and JSON three, upper case and addition two, recall (learnt from a few dozen
# examples) one. Mixed in from the start, addition is not learnt at the cpu-demo budget (0.00
# on dev in every format tried); the cpu-demo preset therefore trains sums alone first (a
# curriculum stage, `make_task_splits(curriculum=...)`), and the mix's two shares keep the
# skill from being forgotten. The dev and test splits are always balanced.
TRAIN_MIX = {"reverse": 4, "vowels": 3, "add": 2, "upper": 2, "json": 3}


def make_task_examples(
    n: int, split: str = "train", seed: int = 0, tasks: tuple[str, ...] = TASKS,
    mix: dict[str, int] | None = None, stream: str = "",
) -> list[dict]:
    """`n` conversations cycling through `tasks`, from one split's pools, deterministic by seed.

    `split` is ``train``, ``dev`` (held out from training, for choosing designs and settings)
    or ``test`` (held out from both). Each example is ``{"messages": [...], "task": str,
    "answer": str}``; the last assistant message is the reference reply. `mix` gives tasks
    integer weights in the cycle (default: `TRAIN_MIX` for the train split, uniform otherwise).
    `stream` names an independent random stream of the same split (a curriculum stage's rows
    are not the mix's first rows again).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unknown = set(tasks) - set(GENERATORS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
    # Different seeds for the two splits so a shared seed never produces mirrored streams.
    rng = random.Random(f"{seed}-{split}-{stream}" if stream else f"{seed}-{split}")
    pools = _pools(split)
    examples = []
    weights = (TRAIN_MIX if split == "train" else {}) if mix is None else mix
    cycle = [task for task in tasks for _ in range(weights.get(task, 1))]
    for index in range(n):
        task = cycle[index % len(cycle)]
        messages, answer = GENERATORS[task](rng, pools)
        examples.append({"messages": messages, "task": task, "answer": answer})
    return examples


def make_task_splits(train_size: int, test_size: int, seed: int = 0, tasks: tuple[str, ...] = TASKS,
                     eval_split: str = "test", curriculum: dict[str, int] | None = None):
    """Train and held-out (`eval_split`: test or dev) `datasets.Dataset`s, disjoint by construction.

    `curriculum` ({task: rows}, in order) puts single-task stages before the `train_size`
    mixed rows: the training set then has a ``stage`` column (0, 1, ... for the stages, then
    the mix), and `sftkit.train.train_lora` trains stage by stage instead of shuffling.
    """
    from datasets import Dataset

    if eval_split == "train":
        raise ValueError("eval_split must be 'test' or 'dev', not the training split")
    rows = make_task_examples(train_size, "train", seed, tasks)
    if curriculum:
        unknown = set(curriculum) - set(GENERATORS)
        if unknown:
            raise ValueError(f"unknown curriculum tasks {sorted(unknown)}; choose from {TASKS}")
        stages = [make_task_examples(n, "train", seed, (task,), stream=f"stage-{task}")
                  for task, n in curriculum.items()]
        rows = [{**row, "stage": stage} for stage, stage_rows in enumerate(stages + [rows]) for row in stage_rows]
    train = Dataset.from_list(rows)
    test = Dataset.from_list(make_task_examples(test_size, eval_split, seed, tasks))
    return train, test


# --------------------------------------------------------------------------- checking


def _last_int(text: str) -> int | None:
    numbers = re.findall(r"-?\d+", text.replace(",", ""))
    return int(numbers[-1]) if numbers else None


def _squash(text: str) -> str:
    return " ".join(text.strip().rstrip(".").split())


def check_answer(task: str, response: str, answer: str) -> bool:
    """Is `response` a correct reply for `task` with expected `answer`?

    Strict where the task *is* the format (``upper`` must match exactly, ``json`` must parse
    to exactly the expected object, ``reverse`` must give exactly the letters reversed, after
    "Answer:" when the reply shows its working);
    lenient on wording where the task is the content (``add`` and ``vowels`` compare the
    last integer, ``recall`` accepts the word alone, case-insensitive, with a final period).
    """
    if task == "reverse":
        # The letters after "Answer:" when the reply shows its working, else the whole reply.
        return _squash(response.rsplit("Answer:", 1)[-1]) == answer
    if task == "vowels" or task == "add":
        return _last_int(response) == int(answer)
    if task == "upper":
        return _squash(response) == answer
    if task == "json":
        try:
            return json.loads(response.strip()) == json.loads(answer)
        except (json.JSONDecodeError, TypeError):
            return False
    if task == "recall":
        return _squash(response).lower() == answer.lower()
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
