"""The interface catalogue: every key the pages use exists in English and Russian,
and the language is chosen from the cookie, else from Accept-Language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serving.web import i18n
from serving.web.i18n import CATALOGUE, Translator, pick_lang

WEB = Path(i18n.__file__).parent
KEY = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-z0-9_.]+)["']""")


def used_keys() -> set[str]:
    found: set[str] = set()
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]:
        found |= set(KEY.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_used_key_exists_in_both_languages() -> None:
    used = used_keys()
    assert len(used) > 100  # the scan found the pages' texts
    # keys built in the template ("ship.route." ~ stage) need at least one entry
    missing = sorted(
        k
        for k in used
        if (
            k not in CATALOGUE
            if not k.endswith(".")
            else not any(c.startswith(k) for c in CATALOGUE)
        )
    )
    assert missing == []
    for key, (en, ru) in CATALOGUE.items():
        assert en.strip() and ru.strip(), key
        # the same placeholders in both languages
        assert set(re.findall(r"{(\w+)}", en)) == set(re.findall(r"{(\w+)}", ru)), key


def test_russian_texts_are_russian() -> None:
    cyrillic = [k for k, (_en, ru) in CATALOGUE.items() if re.search("[А-Яа-яЁё]", ru)]
    assert len(cyrillic) >= 0.95 * len(CATALOGUE)
    t = Translator("ru")
    assert t("queue.title") == "Очередь досмотров"
    assert t.lane("red") == "красный: физический досмотр"
    assert t("audit.verify_ok", n=12) == "Цепочка цела: записей 12, все хеши сходятся."


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        ("ru", "en-GB,en;q=0.9", "ru"),
        ("en", "ru-RU,ru;q=0.9", "en"),
        (None, "ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        (None, "de-DE,de;q=0.9,ru;q=0.5,en;q=0.4", "ru"),
        (None, "en;q=0.3,ru;q=0.7", "ru"),
        (None, "kk-KZ", "en"),
        ("xx", None, "en"),
        (None, "ru;q=abc,en", "en"),
    ],
)
def test_language_choice(cookie: str | None, header: str | None, expected: str) -> None:
    assert pick_lang(cookie, header) == expected


def test_unknown_language_or_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        Translator("de")
    with pytest.raises(KeyError):
        Translator("en")("no.such.key")
