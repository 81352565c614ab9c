"""Realistic flagged listings, as the detection tier would send them (schema version 1).

Used by `manage.py simulate_detection_tier`, the demo and the benchmarks. Everything is generated
locally from a seed: text in several languages with obfuscations, prices, repeat sellers,
images drawn with PIL, hard negatives, duplicates and a chosen share of malformed events.
"""

import base64
import copy
import hashlib
import io
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from PIL import Image

from detection.policies import POLICY_CODES

LANGUAGES = {"en": "US", "es": "ES", "de": "DE", "fr": "FR", "pt": "BR"}
CURRENCY = {"US": "USD", "ES": "EUR", "DE": "EUR", "FR": "EUR", "BR": "BRL"}

# (title template, description, category) per policy and language; {x} is an obfuscated keyword.
VIOLATING = {
    "firearms": {
        "en": [
            (
                "{x} 9mm, clean, no paperwork",
                "Glock-style {x}, two mags, ammo available. Cash only, meet in person.",
                "sports",
            ),
            (
                "AR lower receiver + {x} parts kit",
                "80% lower, jig included. Ships discreetly. DM for more {x} stuff.",
                "tools",
            ),
        ],
        "es": [
            (
                "Pistola {x} con cargadores",
                "Sin papeles, entrega en mano. Munición disponible.",
                "deportes",
            )
        ],
        "de": [
            ("{x} Pistole mit Munition", "Ohne Waffenschein, nur Barzahlung, Abholung.", "sport")
        ],
        "fr": [("Pistolet {x} 9mm", "Sans permis, avec munitions. Paiement en liquide.", "sport")],
        "pt": [("Pistola {x} .380", "Sem documento, entrega em mãos. Munição junto.", "esportes")],
    },
    "drugs": {
        "en": [
            (
                "premium {x} 💊 fast ship",
                "Oxy 30s and {x}, stealth packaging, tracking provided. Bulk discounts.",
                "health",
            ),
            ("party supplies {x} ❄️", "Best quality {x} in town, 1g 2g 5g. Telegram only.", "other"),
        ],
        "es": [
            ("{x} de calidad, envío discreto", "Pastillas sin receta, pago por cripto.", "salud")
        ],
        "de": [("{x} ohne Rezept", "Diskreter Versand, Bezahlung in Bitcoin.", "gesundheit")],
        "fr": [("{x} livraison discrète", "Sans ordonnance, paiement crypto.", "santé")],
        "pt": [("{x} entrega discreta", "Sem receita, pagamento em cripto.", "saúde")],
    },
    "counterfeit": {
        "en": [
            (
                "LV Neverfull {x} 1:1 mirror quality",
                "AAA replica, comes with dust bag and fake receipt. Looks identical to the real "
                "{x}.",
                "fashion",
            ),
            ("Rolex Sub {x} watch", "Swiss-grade replica {x}, box and papers included.", "watches"),
        ],
        "es": [("Bolso {x} réplica AAA", "Calidad espejo, con factura.", "moda")],
        "de": [("{x} Uhr Replika 1:1", "Spiegelqualität, mit Box.", "uhren")],
        "fr": [("Sac {x} copie miroir", "Réplique AAA avec certificat.", "mode")],
        "pt": [("Bolsa {x} réplica primeira linha", "Qualidade espelho, com nota.", "moda")],
    },
    "stolen_goods": {
        "en": [
            (
                "iPhone 16 Pro iCloud locked {x}",
                "No box, no questions. Found it, selling for parts. {x} price, today only.",
                "phones",
            ),
            ("Bosch tools bundle {x}", "Serial numbers removed, must go tonight, cash.", "tools"),
        ],
        "es": [("iPhone bloqueado {x}", "Sin caja, sin preguntas. Solo hoy.", "móviles")],
        "de": [("Fahrrad {x} ohne Rahmennummer", "Muss heute weg, nur bar.", "fahrräder")],
        "fr": [("Vélo {x} sans facture", "Doit partir ce soir, espèces.", "vélos")],
        "pt": [("Celular {x} bloqueado", "Sem caixa, sem perguntas.", "celulares")],
    },
    "human_trafficking": {
        "en": [
            (
                "Hostess jobs abroad {x}, travel paid",
                "Young girls 18+, passport held by agency for safety. Housing included. {x}",
                "jobs",
            ),
            (
                "Massage {x} new girls 24/7",
                "Fresh arrivals, outcall only, no questions.",
                "services",
            ),
        ],
        "es": [
            (
                "Trabajo en el extranjero {x}",
                "Viaje pagado, pasaporte guardado por la agencia.",
                "empleo",
            )
        ],
        "de": [
            ("Job im Ausland {x}", "Reise bezahlt, Pass wird von der Agentur verwahrt.", "jobs")
        ],
        "fr": [("Emploi à l'étranger {x}", "Voyage payé, passeport gardé par l'agence.", "emploi")],
        "pt": [
            ("Emprego no exterior {x}", "Viagem paga, passaporte fica com a agência.", "empregos")
        ],
    },
    "scam": {
        "en": [
            (
                "PS5 brand new $99 {x}",
                "Pay by gift card or Western Union first, I ship after. {x} only today.",
                "electronics",
            ),
            (
                "Concert tickets {x} front row",
                "Send deposit via Zelle, tickets emailed after payment.",
                "tickets",
            ),
        ],
        "es": [("PS5 nueva por 99 {x}", "Pago por adelantado con tarjeta regalo.", "electrónica")],
        "de": [("PS5 neu 99€ {x}", "Vorkasse per Gutschein, Versand danach.", "elektronik")],
        "fr": [("PS5 neuve 99€ {x}", "Paiement d'avance par carte cadeau.", "électronique")],
        "pt": [("PS5 nova por 99 {x}", "Pagamento antecipado com cartão presente.", "eletrônicos")],
    },
}
KEYWORDS = {
    "firearms": ["gun", "pistol", "glock"],
    "drugs": ["oxy", "coke", "xanax"],
    "counterfeit": ["louis vuitton", "rolex", "gucci"],
    "stolen_goods": ["cheap", "urgent", "no box"],
    "human_trafficking": ["girls", "models", "hostess"],
    "scam": ["deal", "wow", "sale"],
}
# Look like violations to a model, and are not: what moderators must clear quickly.
HARD_NEGATIVES = [
    (
        "firearms",
        "Super Soaker water gun, kids summer toy",
        "Large water blaster, holds 2 litres. Great for pool parties.",
        "toys",
    ),
    (
        "firearms",
        "Airsoft rifle M4 replica, orange tip",
        "Spring airsoft, 6mm BBs, orange tip fitted. 18+ only.",
        "sports",
    ),
    ("firearms", "Nerf toy blaster bundle", "Nerf Elite blaster with 40 foam darts.", "toys"),
    (
        "firearms",
        "Leather pistol holster, right hand",
        "Genuine leather OWB holster, fits most compacts. Holster only.",
        "accessories",
    ),
    (
        "firearms",
        "Nail gun, cordless framing nailer",
        "18V nail gun, two batteries, barely used.",
        "tools",
    ),
    (
        "drugs",
        "Oregano and basil dried herb bundle",
        "Home-grown kitchen herbs, 50 g bags.",
        "food",
    ),
    (
        "counterfeit",
        "Authentic Gucci belt, receipt included",
        "Bought in the Milan store 2023, receipt and box.",
        "fashion",
    ),
    (
        "stolen_goods",
        "iPhone 13 unlocked, original box",
        "Factory reset, iCloud removed, receipt from carrier.",
        "phones",
    ),
    (
        "scam",
        "PS5 used, pickup only, pay on collection",
        "Works perfectly, test it before paying.",
        "electronics",
    ),
]
REASONS = {
    "firearms": ["weapon_keyword", "image_weapon_shape"],
    "drugs": ["drug_keyword", "emoji_code", "offplatform_contact"],
    "counterfeit": ["brand_replica_terms", "price_anomaly"],
    "stolen_goods": ["urgency", "locked_device", "price_anomaly"],
    "human_trafficking": ["document_control", "travel_paid", "youth_terms"],
    "scam": ["advance_payment", "gift_card", "price_anomaly"],
}


def obfuscate(word: str, rng: random.Random) -> str:
    """The tricks sellers use to get past keyword filters."""
    style = rng.randrange(5)
    if style == 0:
        return word
    if style == 1 and len(word) > 1:
        i = rng.randrange(1, len(word))
        return word[:i] + "*" + word[i:]
    if style == 2:
        return ".".join(word.upper())
    if style == 3:
        return word.translate(
            str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
        )
    return " ".join(word)


# Known-bad photos (by the demo renderer's seed) that the demo's known-bad bank holds; a share of
# simulated listings re-upload one of them.
KNOWN_BAD_SEEDS = {
    policy: [900_000 + 100 * i + k for k in range(3)] for i, policy in enumerate(POLICY_CODES)
}
KNOWN_BAD_COPY_SHARE = 0.08


def listing_photo(policy: str | None, *, seed: int) -> Image.Image:
    """A listing photo: the policy's object (or a benign one) on a textured background."""
    from detection.ml.demo import render_listing_image  # numpy and PIL only

    return render_listing_image(policy, seed=seed).image


def jpeg(image: Image.Image, *, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def known_bad_bank() -> list[dict]:
    """The demo's known-bad bank: the original photos the simulator's re-uploads copy."""
    titles = {
        "firearms": "Pistol sold without licence (confirmed)",
        "drugs": "Prescription opioids (confirmed)",
        "counterfeit": "Replica designer bag (confirmed)",
        "stolen_goods": "Laptop reported stolen (confirmed)",
        "human_trafficking": "Passport-holding job offer (confirmed)",
        "scam": "Gift-card advance payment scam (confirmed)",
    }
    return [
        {
            "id": f"demo-{policy}-{seed}",
            "policy": policy,
            "title": titles[policy],
            "image": base64.b64encode(jpeg(listing_photo(policy, seed=seed), quality=90)).decode(),
        }
        for policy, seeds in KNOWN_BAD_SEEDS.items()
        for seed in seeds
    ]


# The shadow model the simulator can send beside the champion (`challengers=True`, on in the
# demo): in logit space, sharper than the champion on counterfeit goods, blunter on stolen goods,
# and about the same elsewhere, so a comparison has a winner and a loser per policy.
CHALLENGER_VERSION = "2026.12.0-rc1"
CHALLENGER_SHIFT = {"counterfeit": 1.2, "stolen_goods": -1.0}
CHALLENGER_NOISE = 0.35


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _price(rng) -> str:
    return f"{rng.choice([9.99, 25, 80, 120, 450, 1200, 3.5]) * rng.uniform(0.5, 1.5):.2f}"


@dataclass
class Seller:
    id: str
    created: datetime
    prior: int
    country: str


class DetectionTierSimulator:
    def __init__(
        self, seed: int = 0, *, sellers: int = 60, image_cache: int = 64, challengers: bool = False
    ):
        self.rng = random.Random(seed)
        self.seed = seed
        # Its own generator: the champion's events are the same with or without challengers.
        self.challenger_rng = random.Random(f"challenger-{seed}") if challengers else None
        now = datetime.now(UTC)
        self.sellers = [
            Seller(
                id=f"s-{seed}-{i}",
                created=now - timedelta(days=self.rng.choice([2, 5, 30, 200, 900, 2500])),
                prior=self.rng.choice([0, 0, 0, 1, 2, 5]),
                country=self.rng.choice(list(LANGUAGES.values())),
            )
            for i in range(sellers)
        ]
        self._images: dict[tuple[str, bool, int], bytes] = {}
        self._image_variants = image_cache
        self._sent: list[dict] = []
        self._count = 0

    def _image(self, policy: str, negative: bool) -> bytes:
        if not negative and self.rng.random() < KNOWN_BAD_COPY_SHARE:
            # a re-upload of a known-bad photo: resized and re-compressed, as sellers do
            seed = self.rng.choice(KNOWN_BAD_SEEDS[policy])
            key = ("known-bad", policy, seed)
            if key not in self._images:
                image = listing_photo(None if negative else policy, seed=seed)
                w, h = image.size
                self._images[key] = jpeg(image.resize((int(w * 0.85), int(h * 0.85))), quality=55)
            return self._images[key]
        key = (policy, negative, self.rng.randrange(self._image_variants))
        if key not in self._images:
            seed = int(hashlib.sha256(f"{key}-{self.seed}".encode()).hexdigest()[:8], 16)
            self._images[key] = jpeg(
                listing_photo(None if negative else policy, seed=seed), quality=82
            )
        return self._images[key]

    def _scores(self, policy: str, top: float) -> dict:
        scores = {policy: round(top, 4)}
        for other in self.rng.sample([p for p in POLICY_CODES if p != policy], 2):
            scores[other] = round(self.rng.uniform(0.0, min(top, 0.3)), 4)
        return scores

    def _challenger_scores(self, scores: dict, policy: str, violating: bool) -> dict:
        """The champion's scores as the shadow model sees the same listing: pushed towards the
        truth on the policies it is better at, away from it on those it is worse at."""
        rng = self.challenger_rng
        out = {}
        for code, score in scores.items():
            truth = 1.0 if violating and code == policy else -1.0
            z = _logit(score) + truth * CHALLENGER_SHIFT.get(code, 0.0)
            out[code] = round(1 / (1 + math.exp(-(z + rng.gauss(0.0, CHALLENGER_NOISE)))), 4)
        return out

    def _top_score(self, sample: bool, negative: bool) -> float:
        if sample:
            return self.rng.uniform(0.01, 0.29)
        if negative:
            return self.rng.uniform(0.5, 0.9)
        band = self.rng.random()
        if band < 0.15:
            return self.rng.uniform(0.95, 0.999)
        if band < 0.5:
            return self.rng.uniform(0.70, 0.95)
        if band < 0.85:
            return self.rng.uniform(0.50, 0.70)
        return self.rng.uniform(0.30, 0.50)

    def event(self) -> dict:
        rng = self.rng
        self._count += 1
        seller = rng.choice(
            self.sellers[: max(5, len(self.sellers) // 4)] if rng.random() < 0.5 else self.sellers
        )
        lang = rng.choice(list(LANGUAGES))
        sample = rng.random() < 0.05
        negative = not sample and rng.random() < 0.15
        if negative:
            policy, title, description, category = rng.choice(HARD_NEGATIVES)
            lang = "en"
        else:
            policy = rng.choice(POLICY_CODES)
            template, description, category = rng.choice(
                VIOLATING[policy].get(lang) or VIOLATING[policy]["en"]
            )
            word = obfuscate(rng.choice(KEYWORDS[policy]), rng)
            title, description = template.format(x=word), description.format(x=word)
        region = LANGUAGES[lang]
        top = self._top_score(sample, negative)
        n_images = rng.choice([1, 1, 1, 2])
        images = []
        for i in range(n_images):
            data = self._image(policy, negative)
            images.append(
                {
                    "id": f"img-{i}",
                    "data": base64.b64encode(data).decode(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        now = datetime.now(UTC)
        listing_id = f"l-{self.seed}-{self._count}"
        modality = {
            "text": self._scores(policy, min(1.0, top * rng.uniform(0.8, 1.05))),
            "image": self._scores(policy, top * rng.uniform(0.6, 1.0)),
        }
        event = {
            "schema_version": 1,
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "trace_id": f"tr-{rng.getrandbits(64):016x}",
            "emitted_at": now.isoformat(),
            "listing": {
                "id": listing_id,
                "title": title,
                "description": description,
                "price": {
                    "amount": _price(rng),
                    "currency": CURRENCY[region],
                },
                "category": category,
                "region": region,
                "language": lang,
                "created_at": (now - timedelta(minutes=rng.randrange(1, 600))).isoformat(),
                "images": images,
            },
            "seller": {
                "id": seller.id,
                "account_created_at": seller.created.isoformat(),
                "prior_violations": seller.prior,
                "country": seller.country,
            },
            "detection": {
                "model": "listing-guard",
                "model_version": "2026.11.1",
                "scores": self._scores(policy, top),
                "modality_scores": modality,
                "reason_codes": rng.sample(REASONS[policy], 2),
            },
        }
        if sample:
            event["detection"]["sample"] = True
        if self.challenger_rng is not None:
            violating = not (sample or negative)
            event["detection"]["challengers"] = [
                {
                    "model_version": CHALLENGER_VERSION,
                    "scores": self._challenger_scores(
                        event["detection"]["scores"], policy, violating
                    ),
                }
            ]
        return event

    def malformed(self) -> dict:
        """A broken event, one of the ways real senders break them."""
        event = self.event()
        kind = self.rng.randrange(9)
        if kind == 0:
            del event["listing"]["title"]
        elif kind == 1:
            event["detection"]["scores"] = {"firearms": 1.7}
        elif kind == 2:
            event["detection"]["scores"]["weapons_of_mass_destruction"] = 0.9
        elif kind == 3:
            event["listing"]["title"] = "x" * 5000
        elif kind == 4:
            event["listing"]["images"] = event["listing"]["images"] * 13
        elif kind == 5:
            event["listing"]["images"] = [
                {"id": "img-x", "url": "https://evil.example.net/a.jpg", "sha256": "0" * 64}
            ]
        elif kind == 6:
            data = b"%PDF-1.4 not an image at all"
            event["listing"]["images"] = [
                {
                    "id": "img-x",
                    "data": base64.b64encode(data).decode(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            ]
        elif kind == 7:
            event["listing"]["price"]["amount"] = 12.5  # a number, not a decimal string
        else:
            event["seller"]["prior_violations"] = "many"
        return event

    def batch(
        self, n: int, *, malformed_ratio: float = 0.0, duplicate_ratio: float = 0.03
    ) -> list[dict]:
        out = []
        for _ in range(n):
            roll = self.rng.random()
            if roll < malformed_ratio:
                out.append(self.malformed())
            elif self._sent and roll < malformed_ratio + duplicate_ratio:
                out.append(
                    copy.deepcopy(self.rng.choice(self._sent))
                )  # redelivery of an earlier event
            else:
                event = self.event()
                self._sent.append(event)
                if len(self._sent) > 500:
                    self._sent.pop(0)
                out.append(event)
        return out
