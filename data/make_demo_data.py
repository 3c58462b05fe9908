"""Write whitenclip's small demo data set (deterministic; run from anywhere).

    python data/make_demo_data.py

Outputs, next to this script:

- ``captions.txt``: 4000 everyday scene captions, one per line, written by the compositional
  grammar below (subjects, actions, places, details) -- the "in-domain" set a whitener is fit on;
- ``captions_heldout.txt``: 100 more captions from the same grammar, none also in captions.txt;
- ``captions_odd.txt``: 30 hand-written out-of-domain lines (code, finance, law, recipes, other
  languages, noise) that should score as unlikely under a whitener fit on captions.txt;
- ``images/``: 12 small scenes drawn with PIL (6 PNG, 6 JPEG, 160x120).

Nothing is copied from an existing data set; the same seed always gives the same files.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SEED = 20240607
N_TRAIN = 4000
"""Training captions: >= 10 rows per dimension for MiniLM (d = 384), so the demo's whitener is not
ruled by the smallest of d sample eigenvalues (at 400 rows the least likely caption scored loglik
-859,007, now -19,847). The first 400 are the 0.2 demo set (same seed, same order). Cost: `make
demo` embeds 4100 captions instead of 500: 48.7 s wall (38.1 s CPU) vs 20.0 s (17.6 s CPU), measured
back to back on a shared 2-core x86_64 machine (load average ~4)."""
N_HELDOUT = 100

# Subjects: (text, plural?, kind). Kinds pick scenes; a scene pairs actions with places where
# they make sense. An action "plural form|singular form" agrees with its subject.
SUBJECTS = [
    ("a young woman", False, "person"), ("an old man", False, "person"), ("a little girl", False, "child"),
    ("a small boy", False, "child"), ("two children", True, "child"), ("a group of friends", True, "person"),
    ("a man in a red jacket", False, "person"), ("a woman in a straw hat", False, "person"),
    ("a teenager in a hoodie", False, "person"), ("an elderly couple", True, "person"),
    ("a street musician", False, "musician"), ("three hikers", True, "hiker"),
    ("a woman with a backpack", False, "hiker"),
    ("a mother and her son", True, "person"), ("a chef in a white apron", False, "chef"),
    ("a brown dog", False, "dog"), ("a black and white dog", False, "dog"), ("a small puppy", False, "dog"),
    ("two dogs", True, "dog"), ("a golden retriever", False, "dog"),
    ("a grey cat", False, "cat"), ("a ginger kitten", False, "cat"), ("two cats", True, "cat"),
    ("a flock of pigeons", True, "bird"), ("a white seagull", False, "bird"), ("a pair of ducks", True, "bird"),
    ("a red car", False, "vehicle"), ("a city bus", False, "vehicle"), ("a delivery van", False, "vehicle"),
    ("a fishing boat", False, "boat"), ("a small sailboat", False, "boat"),
]

SCENES = {
    "beach": (["building a sandcastle", "flying a kite", "skipping stones", "walking barefoot",
               "collecting shells", "watching the waves"],
              ["on the beach", "by the sea", "at the water's edge", "on a sandy shore"]),
    "park": (["sitting on a bench", "reading books|reading a book", "eating ice cream", "playing frisbee",
              "having a picnic", "feeding the ducks", "riding bicycles|riding a bicycle"],
             ["in a park", "near a fountain", "under a large oak tree", "on the grass by the pond"]),
    "street": (["waiting at a crosswalk", "carrying shopping bags", "taking photographs|taking a photograph",
                "talking on the phone", "looking at a shop window", "crossing the road"],
               ["on a busy street", "in a crowded market", "outside a bakery", "in the old town"]),
    "station": (["waiting for the train", "checking the timetable", "reading the newspaper",
                 "drinking coffee"],
                ["at a train station", "on the platform", "in a small cafe near the station"]),
    "home": (["painting a fence", "planting flowers", "washing the car", "hanging up laundry"],
             ["in the backyard", "in front of a white house", "in the garden"]),
    "cafe": (["drinking coffee", "sharing a cake", "working on laptops|working on a laptop",
              "laughing together|laughing at a joke"],
             ["in a small cafe", "on a cafe terrace", "at a window table"]),
    "music": (["playing the guitar", "playing the violin", "singing for a small crowd"],
              ["on a street corner", "in a subway station", "outside a church"]),
    "trail": (["climbing a rocky slope", "resting on a large rock", "crossing a wooden bridge",
               "looking at the view", "walking with poles"],
              ["on a mountain trail", "in a pine forest", "near a waterfall", "above the valley"]),
    "playground": (["playing on the swings", "sliding down a slide", "chasing each other|chasing a ball",
                    "jumping in puddles"],
                   ["in a playground", "in the schoolyard", "in the backyard"]),
    "kitchen": (["chopping vegetables", "tasting a sauce", "stirring a large pot", "plating a dessert"],
                ["in a busy kitchen", "in a restaurant kitchen", "at an outdoor food stall"]),
    "dog": (["running", "chasing a ball", "sleeping", "splashing through the water", "digging a hole",
             "catching a stick", "lying in the grass", "jumping over a log", "playing with a rope toy"],
            ["in a park", "on the beach", "in the backyard", "in a muddy field", "by the lake",
             "on a forest path"]),
    "cat": (["sleeping", "sitting on a windowsill", "watching the birds", "stretching",
             "playing with a ball of yarn", "curled up on a blanket", "peeking out of a cardboard box"],
            ["in the kitchen", "in a sunny room", "in the living room", "at home"]),
    "bird": (["pecking at bread crumbs", "standing on a railing", "flying overhead", "resting on a rooftop"],
             ["in a town square", "at the harbour", "in the park", "near the beach"]),
    "water_bird": (["floating on the water", "swimming in a line", "diving for food"],
                   ["on the lake", "on a quiet pond", "in the river"]),
    "vehicle": (["parked", "driving slowly", "stopped at a red light", "covered in snow"],
                ["on a narrow street", "in front of a house", "near the station", "on a country road"]),
    "boat": (["moored", "sailing", "drifting slowly", "heading back to port"],
             ["in the harbour", "on a calm lake", "near the shore", "on the river"]),
}

KIND_SCENES = {
    "person": ["beach", "park", "street", "station", "home", "cafe", "trail"],
    "child": ["beach", "park", "playground"],
    "musician": ["music", "street"],
    "hiker": ["trail"],
    "chef": ["kitchen", "cafe"],
    "dog": ["dog"], "cat": ["cat"], "vehicle": ["vehicle"], "boat": ["boat"],
    "bird": ["bird", "water_bird"],
}

DETAILS = ["on a sunny afternoon", "at sunset", "in the early morning", "in the rain", "on a foggy day",
           "under a blue sky", "while the sun goes down", "on a cold winter day", "in the evening light",
           "during a summer festival", "on a windy day", "under a cloudy sky"]

TEMPLATES = [
    "{S} {be} {A} {P}.",
    "{S} {be} {A} {P} {D}.",
    "{Dc}, {s} {be} {A} {P}.",
    "{Pc}, {s} {be} {A}.",
    "{S} {be} {A} {P} while people pass by.",
    "A photo of {s} {A} {P}.",
    "{S} {A} {P}, {D}.",
    "{S} {A} {P}.",
    "A close-up of {s} {A} {P}.",
]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def make_caption(rng: random.Random) -> str:
    """One caption from the grammar: a subject, a scene's action and place, maybe a detail."""
    s, plural, kind = rng.choice(SUBJECTS)
    actions, places = SCENES[rng.choice(KIND_SCENES[kind])]
    a = rng.choice(actions)
    if "|" in a:
        a = a.split("|")[0 if plural else 1]
    p, d, t = rng.choice(places), rng.choice(DETAILS), rng.choice(TEMPLATES)
    if t.startswith("A close-up") and kind in ("vehicle", "boat"):
        t = TEMPLATES[0]
    return t.format(S=_cap(s), s=s, be="are" if plural else "is", A=a, P=p, Pc=_cap(p), D=d, Dc=_cap(d))


def make_captions(n: int, rng: random.Random, exclude: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        c = make_caption(rng)
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


ODD = [
    "def fit(self, X): return self._solve(np.cov(X.T))",
    "SELECT user_id, COUNT(*) FROM orders GROUP BY user_id HAVING COUNT(*) > 5;",
    "Quarterly revenue rose 4.2 percent, beating analyst estimates for the third straight period.",
    "The lessee shall indemnify the lessor against all claims arising under clause 14(b).",
    "Preheat the oven to 180 degrees and whisk two eggs with 100 grams of sugar.",
    "The eigenvalues of a real symmetric matrix are real and its eigenvectors orthogonal.",
    "Error 503: service temporarily unavailable, retry after 30 seconds.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "Der Hund läuft schnell über die grüne Wiese.",
    "El mercado abre a las ocho de la mañana todos los sábados.",
    "東京の桜は三月の終わりに咲き始める。",
    "qwzx plmok vrtyu bnhgt lkjhsd",
    "0x7f3a 0x0000 0xdead 0xbeef 0x1337",
    "lorem ipsum dolor sit amet consectetur adipiscing elit",
    "To reset your password, click the link in the email we sent you.",
    "The central bank left interest rates unchanged at 3.75 percent.",
    "Patient presents with mild fever and a persistent dry cough for five days.",
    "Mitochondria produce ATP through oxidative phosphorylation.",
    "Install the package with pip and run the tests before opening a pull request.",
    "The treaty was ratified by the senate in a vote of 68 to 31.",
    "Let x be an integer such that x squared is congruent to one modulo p.",
    "Shipping is free on orders over fifty dollars within the continental United States.",
    "!!! ??? ### $$$ %%% &&& *** +++",
    "The the the the the the the the.",
    "BREAKING: markets tumble as bond yields spike overnight",
    "Chapter 7: Asymptotic normality of the maximum likelihood estimator",
    "Terms and conditions apply; see store for details.",
    "Warning: this product contains small parts and is not suitable for children under three.",
    "Compile with -O3 -march=native and link against libm.",
    "Your subscription will renew automatically on the first of next month.",
]


def _scene(draw: ImageDraw.ImageDraw, i: int, w: int, h: int) -> None:
    """Draw scene ``i`` (0..11): simple shapes, distinct colours and layouts."""
    sky = [(135, 190, 235), (250, 170, 110), (20, 24, 60), (200, 220, 240)][i % 4]
    draw.rectangle([0, 0, w, h], fill=sky)
    if i == 0:  # house in a meadow with the sun
        draw.rectangle([0, 80, w, h], fill=(80, 160, 70))
        draw.rectangle([50, 55, 100, 95], fill=(200, 60, 50))
        draw.polygon([(45, 55), (75, 30), (105, 55)], fill=(110, 60, 40))
        draw.ellipse([120, 10, 145, 35], fill=(255, 220, 60))
    elif i == 1:  # sunset over the sea with a sailboat
        draw.rectangle([0, 70, w, h], fill=(30, 70, 130))
        draw.ellipse([60, 45, 100, 85], fill=(255, 120, 40))
        draw.rectangle([0, 70, w, h], fill=(30, 70, 130))
        draw.polygon([(30, 88), (70, 88), (62, 96), (38, 96)], fill=(90, 50, 30))
        draw.polygon([(50, 86), (50, 55), (68, 86)], fill=(245, 245, 235))
    elif i == 2:  # night with moon and stars over hills
        draw.ellipse([110, 12, 135, 37], fill=(240, 240, 210))
        for k in range(25):
            x, y = (37 * k) % w, (53 * k) % 60
            draw.point([(x, y)], fill=(255, 255, 255))
        draw.ellipse([-40, 80, 100, 180], fill=(20, 50, 30))
        draw.ellipse([60, 90, 220, 200], fill=(15, 40, 25))
    elif i == 3:  # snowman
        draw.rectangle([0, 85, w, h], fill=(245, 245, 250))
        draw.ellipse([55, 65, 105, 110], fill=(255, 255, 255), outline=(180, 180, 190))
        draw.ellipse([65, 40, 95, 70], fill=(255, 255, 255), outline=(180, 180, 190))
        draw.polygon([(80, 55), (92, 57), (80, 59)], fill=(240, 120, 20))
    elif i == 4:  # tree on a hill
        draw.ellipse([-20, 80, 180, 200], fill=(90, 170, 60))
        draw.rectangle([75, 50, 85, 90], fill=(100, 70, 40))
        draw.ellipse([50, 15, 110, 65], fill=(40, 120, 40))
    elif i == 5:  # red car on a road
        draw.rectangle([0, 85, w, h], fill=(70, 70, 75))
        draw.line([(0, 102), (w, 102)], fill=(240, 240, 240), width=2)
        draw.rectangle([45, 70, 115, 90], fill=(200, 20, 30))
        draw.rectangle([60, 58, 100, 72], fill=(200, 20, 30))
        for x in (55, 95):
            draw.ellipse([x, 83, x + 14, 97], fill=(20, 20, 20))
    elif i == 6:  # city skyline
        for k, (x, top) in enumerate([(5, 40), (30, 20), (55, 55), (80, 10), (110, 35), (135, 50)]):
            draw.rectangle([x, top, x + 22, h], fill=(60 + 10 * k, 60 + 8 * k, 80))
            for y in range(top + 5, h - 5, 10):
                draw.rectangle([x + 5, y, x + 9, y + 4], fill=(250, 230, 120))
    elif i == 7:  # flowers in grass
        draw.rectangle([0, 60, w, h], fill=(70, 150, 60))
        for k in range(14):
            x, y = 10 + (k * 23) % 140, 70 + (k * 17) % 40
            colour = [(230, 60, 90), (250, 210, 40), (160, 80, 200)][k % 3]
            draw.line([(x + 4, y + 8), (x + 4, y + 18)], fill=(30, 100, 30), width=2)
            draw.ellipse([x, y, x + 9, y + 9], fill=colour)
    elif i == 8:  # snowy mountains
        draw.polygon([(0, h), (50, 30), (100, h)], fill=(110, 110, 130))
        draw.polygon([(60, h), (115, 20), (170, h)], fill=(90, 90, 115))
        draw.polygon([(40, 47), (50, 30), (60, 47)], fill=(255, 255, 255))
        draw.polygon([(103, 40), (115, 20), (127, 40)], fill=(255, 255, 255))
    elif i == 9:  # beach with an umbrella
        draw.rectangle([0, 55, w, 80], fill=(40, 120, 190))
        draw.rectangle([0, 80, w, h], fill=(235, 210, 150))
        draw.line([(80, 60), (80, 105)], fill=(90, 60, 30), width=2)
        draw.pieslice([55, 45, 105, 85], 180, 360, fill=(230, 50, 50))
    elif i == 10:  # a cat face
        draw.ellipse([45, 30, 115, 100], fill=(230, 150, 70))
        draw.polygon([(50, 45), (55, 15), (75, 35)], fill=(230, 150, 70))
        draw.polygon([(110, 45), (105, 15), (85, 35)], fill=(230, 150, 70))
        for x in (62, 88):
            draw.ellipse([x, 52, x + 10, 62], fill=(30, 120, 40))
        draw.polygon([(76, 70), (84, 70), (80, 75)], fill=(240, 120, 140))
    else:  # traffic light at dusk
        draw.rectangle([0, 95, w, h], fill=(50, 50, 55))
        draw.rectangle([72, 20, 88, 95], fill=(30, 30, 30))
        for k, colour in enumerate([(220, 30, 30), (90, 80, 20), (20, 80, 30)]):
            draw.ellipse([74, 24 + 17 * k, 86, 36 + 17 * k], fill=colour)


def make_images(folder: Path, w: int = 160, h: int = 120) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = ["house", "sunset", "night", "snowman", "tree", "car",
             "city", "flowers", "mountains", "beach", "cat", "traffic-light"]
    written = []
    for i, name in enumerate(names):
        im = Image.new("RGB", (w, h))
        _scene(ImageDraw.Draw(im), i, w, h)
        path = folder / (f"{i:02d}-{name}.png" if i % 2 == 0 else f"{i:02d}-{name}.jpg")
        if path.suffix == ".png":
            im.save(path, optimize=True)
        else:
            im.save(path, quality=90)
        written.append(path)
    return written


def main() -> None:
    rng = random.Random(SEED)
    train = make_captions(N_TRAIN, rng, exclude=set())
    heldout = make_captions(N_HELDOUT, rng, exclude=set(train))
    for name, lines in (("captions.txt", train), ("captions_heldout.txt", heldout), ("captions_odd.txt", ODD)):
        (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    images = make_images(HERE / "images")
    print(f"wrote {len(train)} + {len(heldout)} + {len(ODD)} captions and {len(images)} images under {HERE}")


if __name__ == "__main__":
    main()
