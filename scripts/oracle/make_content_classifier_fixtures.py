#!/usr/bin/env python3
"""Reference scores for Basalt's content classifier, made once with alt-profanity-check.

Needs a virtual environment with the package and the scikit-learn it pins:

    python3 -m venv /var/tmp/basalt-oracle/apc-venv
    /var/tmp/basalt-oracle/apc-venv/bin/pip install alt-profanity-check==1.9.1
    /var/tmp/basalt-oracle/apc-venv/bin/python scripts/oracle/make_content_classifier_fixtures.py

Writes crates/guardrails/tests/fixtures/content-classifier.json: each text with the
probability `profanity_check.predict_prob` gives it. The Rust test reads only that file and
the exported model (scripts/fetch-models); it needs neither Python nor scikit-learn.
"""

from __future__ import annotations

import json
from pathlib import Path

from profanity_check import predict_prob

LONG_CLEAN = " ".join(f"Paragraph {i} describes the harbour, the tides and the old lighthouse." for i in range(60))
LONG_RUDE = LONG_CLEAN + " You are a worthless idiot and everyone hates you."

TEXTS = [
    "",
    "   ",
    "Hello",
    "What is the capital of France?",
    "The quarterly report is attached; please review it before Monday.",
    "Thank you so much, that was really helpful!",
    "You are an idiot.",
    "you're a stupid, useless piece of garbage",
    "Shut up, moron.",
    "What the hell is wrong with you?",
    "This is damn good pizza.",
    "F*** off",
    "fuck off",
    "FUCK OFF",
    "Go to hell, you pathetic loser!!!",
    "I hate Mondays.",
    "I will kill this process if it hangs again.",
    "He is such a jerk sometimes.",
    "That movie was shit.",
    "bitch please",
    "Your code is dumb and you should feel dumb.",
    "assassin assessment class classic",
    "Scunthorpe United won on Saturday.",
    "idiot_variable = stupid_function(42)",
    "idiot-proof design",
    "I'm not an idiot, you're the idiot",
    "don't won't can't shouldn't",
    "¡Eres un idiota! Tu es un imbécile. Du bist ein Idiot.",
    "Ты идиот. 你是白痴。 あなたはばかです。",
    "naïve café résumé fiancée",
    "e\u0301le\u0300ve stupid",
    "Ⅻ ½ ² x²y³ 3rd 4th",
    "moron moron moron moron moron",
    "🙂 you absolute 🤡 clown",
    "tab\tseparated\tstupid\nnew line idiot",
    "A".join(["x"] * 50),
    LONG_CLEAN,
    LONG_RUDE,
]


def main() -> None:
    scores = predict_prob(TEXTS)
    fixtures = [{"text": t, "probability": float(p)} for t, p in zip(TEXTS, scores)]
    out = Path(__file__).resolve().parents[2] / "crates/guardrails/tests/fixtures/content-classifier.json"
    out.write_text(json.dumps(fixtures, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(fixtures)} fixtures to {out}")


if __name__ == "__main__":
    main()
