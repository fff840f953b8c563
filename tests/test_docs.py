"""The docs cannot drift silently: settings, routes and links are checked against the code.

- every field of the three settings classes is in its ``.env.*.example`` file, and back;
- every variable of those files is named somewhere in ``docs/``;
- every route of the API worker's OpenAPI schema (method and path) is listed in ``docs/api.md``, and the
  validator's and the reference miner's in ``docs/internals.md``;
- every relative link in ``README.md`` and ``docs/`` leads to a file that exists, and every anchor
  into a page that exists to one of its headings (pages that are not there yet are not checked);
- the README stays a front door: short, and its two commands exist.

These read what exists when the tests run, so pages added later are checked as soon as they land.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.settings import ApiSettings
from miner.settings import MinerSettings
from validator.settings import ValidatorSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

SETTINGS = [(ApiSettings, ".env.api.example"), (ValidatorSettings, ".env.validator.example"),
            (MinerSettings, ".env.miner.example")]
# Inherited from the shared settings, but an API worker never talks to the chain and serves no signed route.
NOT_IN_EXAMPLE = {ApiSettings: {"NETWORK", "NETUID", "SUBNET_FILE", "SIGNED_BODY_MAX_BYTES"}}


def example_variables(name: str) -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / name).read_text(), re.M))


def docs_text() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))


@pytest.mark.parametrize("cls, example", SETTINGS, ids=[e for _, e in SETTINGS])
def test_every_setting_is_in_its_example_file_and_back(cls, example):
    fields = {name.upper() for name in cls.model_fields} - NOT_IN_EXAMPLE.get(cls, set())
    variables = example_variables(example)
    assert not fields - variables, f"settings of {cls.__name__} missing from {example}"
    assert not variables - {name.upper() for name in cls.model_fields}, f"{example} names settings that do not exist"


@pytest.mark.parametrize("example", [e for _, e in SETTINGS])
def test_every_setting_is_documented(example):
    text = docs_text()
    missing = sorted(v for v in example_variables(example) if not re.search(rf"(?<![A-Z0-9_]){v}(?![A-Z0-9_])", text))
    assert not missing, f"{example}: not named in docs/*.md (add them to docs/operations.md#settings): {missing}"


def normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def routes(process: str, tmp_path) -> list[tuple[str, str]]:
    """(method, path) of every operation in the process's OpenAPI schema (the app is built, not started)."""
    if process == "api":
        from api.app import create_app as build
        settings = ApiSettings(_env_file=None, data_dir=str(tmp_path))
    elif process == "validator":
        from validator.app import create_app as build
        settings = ValidatorSettings(_env_file=None, data_dir=str(tmp_path))
    else:
        from miner.app import create_app as build
        settings = MinerSettings(_env_file=None, data_dir=str(tmp_path))
    schema = build(settings).openapi()
    return [(method.upper(), path) for path, operations in schema["paths"].items() for method in operations]


@pytest.mark.parametrize("process, page", [("api", "api.md"), ("validator", "internals.md"),
                                           ("miner", "internals.md")])
def test_every_route_of_the_openapi_schema_is_documented(process, page, tmp_path):
    lines = [normalise(line) for line in (DOCS / page).read_text().splitlines()]
    found = routes(process, tmp_path)
    assert len(found) >= 3
    missing = []
    for method, path in found:
        token = re.compile(rf"(?<![\w/{{}}-]){re.escape(normalise(path))}(?![\w/{{}}-])")
        if not any(token.search(line) and re.search(rf"\b{method}\b", line) for line in lines):
            missing.append(f"{method} {path}")
    assert not missing, f"{process} routes not listed (method and path on one line) in docs/{page}: {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"^#{1,6} (.+)$", line)):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_the_anchor_slugs_are_githubs():
    assert slug("`POST /v1/completions` (legacy text completion)") == "post-v1completions-legacy-text-completion"
    assert slug("`GET|POST /web_retrieval`") == "getpost-web_retrieval"
    assert slug("Keys, limits, credits and usage") == "keys-limits-credits-and-usage"


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_somewhere(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        destination = (page.parent / file).resolve() if file else page
        if not destination.exists():
            if destination.suffix == ".md" and destination.parent == DOCS:
                continue  # a page being written elsewhere: checked once it exists
            broken.append(target)
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for command in ("scripts/demo.sh", "scripts/test.sh"):
        assert command in readme and (ROOT / command).exists()
